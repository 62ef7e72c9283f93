"""OCO lists at the venue (issue 26): where the venue offers them (Binance spot `ocoAllowed`), a position's stop and
target rest at the exchange as one OCO list sent through ccxt (`POST /api/v3/orderList/oco`): each leg an order of its
own, with its own derived client id and status; when one leg fills the other becomes EXPIRED; a moved stop replaces
the list (cancel, then one new list: never two); any other exit cancels the list first. A venue without OCO keeps the
stop alone (tests/test_live_stops.py), said at start-up. Against the local venue through the real ccxt client; only
the decision stage is replaced, as in tests/test_live_refusal.py."""

from __future__ import annotations

import logging

import ccxt
import pytest
from test_live_cycle_crash import STATUS  # the venue's order statuses as the store says them
from test_live_refusal import (  # noqa: F401  (world: the trained model and venue)
    KEYS,
    PAIRS,
    at,
    forget_open_orders,
    world,
)

from morningstar_trader import kernel
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.live_execution import reconcile
from morningstar_trader.risk import RiskState
from morningstar_trader.types import Decision


@pytest.fixture
def live(world, tmp_path, monkeypatch):  # noqa: F811
    "A live context on a venue that offers OCO lists; the decision stage does what `wants[pair]` says."
    server, settings, data = world
    server.oco_allowed = True
    settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"state_dir": tmp_path})})
    try:
        ctx = build_context(settings, KEYS, run_id="oco", confirm_live=True, allow_unproven_model=True)
        assert ctx.venue.stops_at_venue and ctx.venue.oco
        assert reconcile(ctx.executor, PAIRS).ok
        wants = {}

        def decide(pair, pred, price, equity, position, **_):
            action, stop, target = wants.pop(pair, ("hold", None, None))
            if action == "open_long" and position is None:
                return Decision(pair, action, round(0.05 * equity / price, 4), price * stop, price * target, ("test",))
            if action == "adjust" and position is not None:
                return Decision(pair, action, 0.0, price * stop, position.take_profit, ("test",))
            if action == "close" and position is not None:
                return Decision(pair, action, position.size, reasons=("test",))
            return Decision(pair, "hold", reasons=("test",))

        monkeypatch.setattr(kernel, "decide", decide)
        yield server, ctx, data, wants
    finally:
        server.oco_allowed = False
        forget_open_orders(server)


def legs(server, start, symbol="BTCUSDT", status=("NEW",)):
    "The venue's OCO legs since the `start`-th order: (stop leg, target leg) pairs by list."
    found = [o for o in list(server.account.orders.values())[start:] if o.symbol == symbol and o.list_id != -1]
    by_list = {}
    for o in found:
        by_list.setdefault(o.list_id, {})[o.type] = o
    return [
        (v["STOP_LOSS_LIMIT"], v["LIMIT_MAKER"])
        for v in by_list.values()
        if any(o.status in status for o in v.values())
    ]


def store_agrees(server, ctx, start):
    "Every venue order since `start` is the store's, in the same state; fills are the venue's trades; balances agree."
    ours = list(server.account.orders.values())[start:]
    assert {o.client_id: STATUS[o.status] for o in ours} == {
        o.client_id: ctx.store.order(o.client_id)["status"] for o in ours
    }
    ids = {o.id: f"{o.symbol[:3]}/USDT" for o in ours}
    trades = {f"{ids[t['orderId']]}:{t['id']}" for t in server.account.trades if t["orderId"] in ids}
    assert set(ctx.store.fills()["trade_id"]) == trades
    assert reconcile(ctx.executor, PAIRS).ok


def test_the_stop_and_target_rest_as_one_oco_list_moved_by_replacing_the_list_and_cancelled_before_an_exit(live):
    server, ctx, data, wants = live
    start, close = len(server.account.orders), data["BTC/USDT"]["close"].iloc[1909]
    wants["BTC/USDT"] = ("open_long", 0.9, 1.5)
    run_cycle(ctx, at(server, data, 1910))
    ((stop, target),) = legs(server, start)
    pos = ctx.store.positions()["BTC/USDT"]
    assert stop.side == target.side == "SELL" and stop.qty == target.qty == pytest.approx(pos.size)
    assert stop.stop == pytest.approx(close * 0.9) and stop.price == pytest.approx(close * 0.9 * (1 - 50 / 1e4))
    assert target.price == pytest.approx(close * 1.5) and stop.list_id == target.list_id
    rows = {o.client_id: ctx.store.order(o.client_id) for o in (stop, target)}
    assert [r["intent"] for r in rows.values()] == ["protect", "protect_target"]  # two orders, two derived ids
    assert [r["exchange_order_id"] for r in rows.values()] == [str(stop.id), str(target.id)]
    assert float(ctx.executor.exchange.fetch_balance()["free"].get("BTC") or 0) == 0  # locked once, by the list
    run_cycle(ctx, at(server, data, 1911))  # nothing changed: the same list
    assert legs(server, start) == [(stop, target)]
    wants["BTC/USDT"] = ("adjust", 0.95, None)  # a tightened stop: the list is cancelled, then one new list
    run_cycle(ctx, at(server, data, 1912))
    ((moved, moved_target),) = legs(server, start)
    assert stop.status == target.status == "CANCELED" and moved.list_id != stop.list_id
    assert moved.stop == pytest.approx(data["BTC/USDT"]["close"].iloc[1911] * 0.95)
    assert moved_target.price == pytest.approx(target.price)
    wants["BTC/USDT"] = ("close", None, None)  # an exit: the list first, or the venue refuses the sell
    run_cycle(ctx, at(server, data, 1913))
    assert moved.status == moved_target.status == "CANCELED" and legs(server, start) == []
    exits = [o for o in list(server.account.orders.values())[start:] if o.side == "SELL" and o.list_id == -1]
    assert [(o.type, o.status) for o in exits] == [("MARKET", "FILLED")]
    assert "BTC/USDT" not in ctx.store.positions()
    store_agrees(server, ctx, start)


def test_a_target_reached_fills_its_leg_the_stop_expires_and_no_cooldown_starts(live):
    server, ctx, data, wants = live
    start, close = len(server.account.orders), data["ETH/USDT"]["close"].iloc[1919]
    wants["ETH/USDT"] = ("open_long", 0.9, 1.02)
    run_cycle(ctx, at(server, data, 1920))
    ((stop, target),) = legs(server, start, "ETHUSDT")
    spiked = {p: df.copy() for p, df in data.items()}
    t = data["ETH/USDT"].index[1921]
    spiked["ETH/USDT"].loc[t, "high"] = max(close * 1.05, spiked["ETH/USDT"].loc[t, "high"])
    spiked["ETH/USDT"].loc[t, "low"] = min(spiked["ETH/USDT"].loc[t, ["open", "close"]].min(), stop.stop * 1.01)
    server.set_candles(spiked)
    try:
        run_cycle(ctx, at(server, data, 1922))
    finally:
        server.set_candles(data)
    assert target.status == "FILLED" and stop.status == "EXPIRED"
    assert ctx.store.order(target.client_id)["status"] == "filled"
    assert ctx.store.order(stop.client_id)["status"] == "cancelled"  # the venue expired it
    (fill,) = ctx.store.fills(target.client_id).itertuples()
    assert fill.price == pytest.approx(target.price) and "ETH/USDT" not in ctx.store.positions()
    rs = RiskState.from_json(ctx.store.load_runtime("risk_state"))
    assert "ETH/USDT" not in rs.cooldown_until  # a target is no stop-out
    store_agrees(server, ctx, start)


def test_a_crash_candle_triggers_the_stop_leg_the_target_expires(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    wants["BTC/USDT"] = ("open_long", 0.9, 1.5)
    run_cycle(ctx, at(server, data, 1930))
    ((stop, target),) = legs(server, start)
    crashed = {p: df.copy() for p, df in data.items()}
    t = data["BTC/USDT"].index[1931]
    crashed["BTC/USDT"].loc[t, "low"] = stop.stop * 0.9
    server.set_candles(crashed)
    try:
        run_cycle(ctx, at(server, data, 1932))
    finally:
        server.set_candles(data)
    assert stop.status == "FILLED" and target.status == "EXPIRED"
    assert ctx.store.order(stop.client_id)["status"] == "filled"
    assert ctx.store.order(target.client_id)["status"] == "cancelled"
    assert "BTC/USDT" not in ctx.store.positions()
    store_agrees(server, ctx, start)


def test_a_venue_without_oco_keeps_the_stop_alone_and_says_so_at_start_up(world, tmp_path, caplog):  # noqa: F811
    server, settings, data = world
    settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"state_dir": tmp_path})})
    with caplog.at_level(logging.WARNING):
        ctx = build_context(settings, KEYS, run_id="no-oco", confirm_live=True, allow_unproven_model=True)
    assert ctx.venue.stops_at_venue and not ctx.venue.oco
    assert "offers no OCO lists for ['BTC/USDT', 'ETH/USDT']: stops rest at the venue alone" in caplog.text


def oco_posts(server):
    return [r for r in server.requests if r["method"] == "POST" and r["path"] == "/api/v3/orderList/oco"]


def test_a_list_whose_reply_is_lost_is_found_by_its_legs_client_ids_and_never_sent_twice(live):
    server, ctx, data, wants = live
    start, posts = len(server.account.orders), len(oco_posts(server))
    server.inject("/api/v3/orderList/oco", "slow", method="POST", delay_s=1.5)  # placed, the answer comes too late
    wants["ETH/USDT"] = ("open_long", 0.9, 1.5)
    run_cycle(ctx, at(server, data, 1940))
    ((stop, target),) = legs(server, start, "ETHUSDT")
    assert ctx.store.order(stop.client_id)["status"] == ctx.store.order(target.client_id)["status"] == "submitted"
    run_cycle(ctx, at(server, data, 1941))
    assert legs(server, start, "ETHUSDT") == [(stop, target)] and len(oco_posts(server)) == posts + 1
    store_agrees(server, ctx, start)


def test_a_list_the_venue_refuses_leaves_the_stop_alone_at_the_venue_not_bare(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    server.inject("/api/v3/orderList/oco", "reject", method="POST")  # -2010
    wants["BTC/USDT"] = ("open_long", 0.9, 1.5)
    report = run_cycle(ctx, at(server, data, 1950))
    stops = [o for o in list(server.account.orders.values())[start:] if o.type == "STOP_LOSS_LIMIT"]
    assert [(o.status, o.list_id) for o in stops] == [("NEW", -1)]  # the stop alone; the target stays in the bot
    assert not [a for a in report.snapshot.alerts if a.kind == "unprotected"]
    run_cycle(ctx, at(server, data, 1951))  # no list tried again for the same target: no churn
    assert [o.status for o in list(server.account.orders.values())[start:] if o.type == "STOP_LOSS_LIMIT"] == ["NEW"]
    store_agrees(server, ctx, start)


def test_the_local_venue_refuses_a_list_whose_prices_are_on_the_wrong_sides_as_binance_does(live):
    server, ctx, data, wants = live
    at(server, data, 1960)
    ex, price = ctx.executor.exchange, server.price_now("BTC/USDT")
    server.account.balances["BTC"] = server.account.balances.get("BTC", 0.0) + 0.01
    request = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "quantity": "0.01",
        "aboveType": "LIMIT_MAKER",
        "abovePrice": ex.price_to_precision("BTC/USDT", price * 0.99),  # a target below the market
        "belowType": "STOP_LOSS_LIMIT",
        "belowStopPrice": ex.price_to_precision("BTC/USDT", price * 0.9),
        "belowPrice": ex.price_to_precision("BTC/USDT", price * 0.89),
        "belowTimeInForce": "GTC",
    }
    try:
        with pytest.raises(ccxt.InvalidOrder, match="The relationship of the prices for the orders is not correct"):
            ex.private_post_orderlist_oco(request)
        server.oco_allowed = False  # a venue without OCO lists refuses them outright
        with pytest.raises(ccxt.InvalidOrder, match="OCO orders are not supported for this symbol"):
            ex.private_post_orderlist_oco({**request, "abovePrice": ex.price_to_precision("BTC/USDT", price * 1.1)})
    finally:
        server.account.balances["BTC"] -= 0.01


def test_a_target_leg_partly_filled_leaves_the_rest_protected_by_a_new_list_for_what_is_held(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    wants["BTC/USDT"] = ("open_long", 0.9, 1.5)
    run_cycle(ctx, at(server, data, 1970))
    ((stop, target),) = legs(server, start)
    size = ctx.store.positions()["BTC/USDT"].size
    with server._lock:  # the market reaches the target for 40 % of it: the venue expires the stop leg
        server._trade(target, round(target.qty * 0.4, 5), target.price)
    assert target.status == "PARTIALLY_FILLED" and stop.status == "EXPIRED"
    run_cycle(ctx, at(server, data, 1971))  # learned at reconciliation; the rest gets one new list for what is held
    held = ctx.store.positions()["BTC/USDT"].size
    assert held == pytest.approx(size - target.executed, abs=1e-12) and target.status == "CANCELED"
    ((new_stop, new_target),) = legs(server, start)
    rest = float(ctx.executor.exchange.amount_to_precision("BTC/USDT", held))  # the venue's step, rounded down
    assert new_stop.qty == new_target.qty == pytest.approx(rest) and new_stop.list_id != stop.list_id
    store_agrees(server, ctx, start)


def test_a_list_and_then_its_stop_alone_refused_flag_the_position_unprotected_and_both_are_tried_again(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    server.inject("/api/v3/orderList/oco", "reject", method="POST")
    server.inject("/api/v3/order", "reject", method="POST", after=1)  # the entry goes through, the lone stop not
    wants["ETH/USDT"] = ("open_long", 0.9, 1.5)
    report = run_cycle(ctx, at(server, data, 1980))
    assert "ETH/USDT" in ctx.store.positions() and legs(server, start, "ETHUSDT") == []
    (bare,) = [a for a in report.snapshot.alerts if a.kind == "unprotected"]
    assert bare.level == "critical" and "insufficient balance" in bare.message
    run_cycle(ctx, at(server, data, 1981))  # the next close: the stop goes out (alone: this target was refused)
    stops = [o for o in list(server.account.orders.values())[start:] if o.type == "STOP_LOSS_LIMIT"]
    assert [(o.status, o.list_id) for o in stops] == [("NEW", -1)]
    store_agrees(server, ctx, start)
