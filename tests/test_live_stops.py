"""Stops at the venue (issue 26): after an entry fills live, its stop rests at the exchange as a STOP_LOSS_LIMIT order;
the kernel's tightened stop moves it by cancel, then replace (never two open); any other exit cancels it first (the
venue locks the coins it would sell); a stop the venue refuses flags the position unprotected and is tried again at
the next close; a crash candle triggers it at the venue and the store learns the fill from the venue. Against the
local venue through the real ccxt client, with a really trained tiny model; only the decision stage is replaced, so
that the test chooses what each pair wants (as tests/test_live_refusal.py)."""

from __future__ import annotations

import pytest
from test_live_refusal import (  # noqa: F401  (world: the trained model and venue)
    KEYS,
    PAIRS,
    at,
    forget_open_orders,
    venue_orders,
    world,
)

from morningstar_trader import kernel
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.kernel import bar_number
from morningstar_trader.live_execution import reconcile
from morningstar_trader.risk import RiskState
from morningstar_trader.types import Decision


@pytest.fixture
def live(world, tmp_path, monkeypatch):  # noqa: F811
    "A live context of its own whose decision stage does what `wants[pair]` says: (action, stop factor)."
    server, ctx, data, wants = live_context(world, tmp_path, monkeypatch)
    assert ctx.venue.stops_at_venue  # the local venue takes STOP_LOSS_LIMIT orders, as Binance spot
    yield server, ctx, data, wants
    forget_open_orders(server)


def live_context(world, tmp_path, monkeypatch, **live_settings):  # noqa: F811
    "The `live` fixture's context, with `live_settings` changed."
    server, settings, data = world
    settings = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update={"state_dir": tmp_path}),
            "live": settings.live.model_copy(update=live_settings),
        }
    )
    ctx = build_context(settings, KEYS, run_id="stops", confirm_live=True, allow_unproven_model=True)
    assert reconcile(ctx.executor, PAIRS).ok
    wants = {}

    def decide(pair, pred, price, equity, position, **_):
        action, factor = wants.pop(pair, ("hold", None))
        if action == "open_long" and position is None:
            return Decision(pair, action, round(0.05 * equity / price, 4), price * factor, price * 1.5, ("test",))
        if action == "adjust" and position is not None:
            return Decision(pair, action, 0.0, price * factor, position.take_profit, ("test",))
        if action == "close" and position is not None:
            return Decision(pair, action, position.size, reasons=("test",))
        return Decision(pair, "hold", reasons=("test",))

    monkeypatch.setattr(kernel, "decide", decide)
    return server, ctx, data, wants


def open_stops(server, start, symbol="BTCUSDT"):
    return [o for o in venue_orders(server, start, symbol, stops=True) if o.status in ("NEW", "PARTIALLY_FILLED")]


def store_agrees(server, ctx, start):
    "Every venue order since `start` is the store's, in the same state; fills are the venue's trades; balances agree."
    done = {"NEW": "submitted", "FILLED": "filled", "CANCELED": "cancelled", "PARTIALLY_FILLED": "partially_filled"}
    ours = list(server.account.orders.values())[start:]
    assert {o.client_id: done[o.status] for o in ours} == {
        o.client_id: ctx.store.order(o.client_id)["status"] for o in ours
    }
    ids = {o.id: f"{o.symbol[:3]}/USDT" for o in ours}
    trades = {f"{ids[t['orderId']]}:{t['id']}" for t in server.account.trades if t["orderId"] in ids}
    assert set(ctx.store.fills()["trade_id"]) == trades
    assert reconcile(ctx.executor, PAIRS).ok


def test_the_stop_rests_at_the_venue_moves_by_cancel_and_replace_and_is_cancelled_before_the_exit(live):
    server, ctx, data, wants = live
    start, close = len(server.account.orders), data["BTC/USDT"]["close"].iloc[1859]
    wants["BTC/USDT"] = ("open_long", 0.9)
    run_cycle(ctx, at(server, data, 1860))
    (stop,) = open_stops(server, start)
    pos = ctx.store.positions()["BTC/USDT"]
    assert stop.side == "SELL" and stop.qty == pytest.approx(pos.size) and stop.stop == pytest.approx(close * 0.9)
    assert stop.price == pytest.approx(close * 0.9 * (1 - 50 / 1e4), rel=1e-6)  # live.stop_limit_bps below the stop
    assert ctx.store.order(stop.client_id)["intent"] == "protect"
    assert float(ctx.executor.exchange.fetch_balance()["free"].get("BTC") or 0) == 0  # the venue locks it
    run_cycle(ctx, at(server, data, 1861))  # nothing changed: the same stop, no request to move it
    assert open_stops(server, start) == [stop]
    wants["BTC/USDT"] = ("adjust", 0.95)  # the kernel tightens the stop: cancel, then replace
    run_cycle(ctx, at(server, data, 1862))
    (moved,) = open_stops(server, start)
    assert stop.status == "CANCELED" and moved.stop == pytest.approx(data["BTC/USDT"]["close"].iloc[1861] * 0.95)
    assert ctx.store.positions()["BTC/USDT"].stop_loss == pytest.approx(moved.stop)
    wants["BTC/USDT"] = ("close", None)  # an exit: the stop is cancelled first, or the venue refuses the sell
    run_cycle(ctx, at(server, data, 1863))
    assert moved.status == "CANCELED" and open_stops(server, start) == []
    exits = [o for o in venue_orders(server, start, "BTCUSDT") if o.side == "SELL"]
    assert [(o.type, o.status) for o in exits] == [("MARKET", "FILLED")]
    assert "BTC/USDT" not in ctx.store.positions()
    store_agrees(server, ctx, start)


def test_a_stop_the_venue_refuses_flags_the_position_unprotected_and_is_tried_again(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    server.inject("/api/v3/order", "reject", method="POST", after=1)  # the entry goes through, its stop is refused
    wants["ETH/USDT"] = ("open_long", 0.9)
    report = run_cycle(ctx, at(server, data, 1870))
    assert "ETH/USDT" in ctx.store.positions() and open_stops(server, start, "ETHUSDT") == []
    bare = [a for a in report.snapshot.alerts if a.kind == "unprotected"]
    assert [(a.level, a.pair) for a in bare] == [("critical", "ETH/USDT")]
    assert "insufficient balance" in bare[0].message  # the venue's reason, as it said it
    report = run_cycle(ctx, at(server, data, 1871))  # the next close tries again
    assert len(open_stops(server, start, "ETHUSDT")) == 1
    assert not [a for a in report.snapshot.alerts if a.kind == "unprotected"]
    store_agrees(server, ctx, start)


def test_a_stop_on_the_wrong_side_of_the_market_is_refused_as_binance_does(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    gapped = {p: df.copy() for p, df in data.items()}
    t = data["ETH/USDT"].index[1875]
    gapped["ETH/USDT"].loc[t, ["open", "low"]] = data["ETH/USDT"]["close"].iloc[1874] * 0.95
    server.set_candles(gapped)  # the entry fills at an open below the stop it was decided with
    try:
        wants["ETH/USDT"] = ("open_long", 0.99)
        report = run_cycle(ctx, at(server, data, 1875))
        (bare,) = [a for a in report.snapshot.alerts if a.kind == "unprotected"]
        assert "Stop price would trigger immediately" in bare.message
        assert venue_orders(server, start, stops=True) == []  # nothing rests at the venue
        report = run_cycle(ctx, at(server, data, 1876))  # the bot's own check exits at the close
    finally:
        server.set_candles(data)
    assert "ETH/USDT" not in ctx.store.positions()
    assert not [a for a in report.snapshot.alerts if a.kind == "unprotected"]
    store_agrees(server, ctx, start)


def test_a_crash_candle_triggers_the_stop_at_the_venue_and_the_store_learns_the_fill(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    wants["BTC/USDT"] = ("open_long", 0.9)
    run_cycle(ctx, at(server, data, 1880))
    (stop,) = open_stops(server, start)
    crashed = {p: df.copy() for p, df in data.items()}
    t = data["BTC/USDT"].index[1881]
    crashed["BTC/USDT"].loc[t, "low"] = stop.stop * 0.9  # the next candle falls through the stop, inside the candle
    server.set_candles(crashed)
    try:
        run_cycle(ctx, at(server, data, 1882))  # the venue triggered it; the cycle's reconciliation records the fill
    finally:
        server.set_candles(data)
    assert stop.status == "FILLED" and ctx.store.order(stop.client_id)["status"] == "filled"
    (fill,) = ctx.store.fills(stop.client_id).itertuples()
    assert (
        fill.price == pytest.approx(stop.stop)
        and fill.time == t + (data["BTC/USDT"].index[1] - data["BTC/USDT"].index[0]) / 2
    )
    assert "BTC/USDT" not in ctx.store.positions()
    assert not [o for o in venue_orders(server, start, "BTCUSDT") if o.side == "SELL" and o.type == "MARKET"]
    store_agrees(server, ctx, start)
    # the shadow record: the simulator would have sold at the stop inside the same candle, with slippage
    slip = ctx.venue.costs.slippage_bps
    row = ctx.shadow.frame().set_index("client_order_id").loc[stop.client_id]
    assert slip > 0 and row["kind"] == "venue_stop" and row["sim_time"] == t.isoformat()
    assert row["sim_price"] == pytest.approx(stop.stop * (1 - slip / 1e4), rel=1e-12)
    assert row["live_price"] == pytest.approx(fill.price, rel=1e-12) and row["live_delay_s"] == 1800.0
    assert row["diff_bps"] == pytest.approx(-(1 / (1 - slip / 1e4) - 1) * 1e4, rel=1e-9)  # the venue sold better


def test_the_bots_own_stop_exit_is_shadowed_at_the_open_it_gapped_to(world, tmp_path, monkeypatch):  # noqa: F811
    "No stop at the venue, a candle that opens through the stop: live sells at the close, the simulator at that open."
    server, ctx, data, wants = live_context(world, tmp_path, monkeypatch, stops_at_venue=False)
    assert not ctx.venue.stops_at_venue
    try:
        wants["BTC/USDT"] = ("open_long", 0.9)
        run_cycle(ctx, at(server, data, 1870))
        stop, t = ctx.store.positions()["BTC/USDT"].stop_loss, data["BTC/USDT"].index[1871]
        crashed = {p: df.copy() for p, df in data.items()}
        gap = stop * 0.95  # the candle opens below the stop: the simulator fills at that open, not at the stop
        crashed["BTC/USDT"].loc[t, ["open", "low"]] = [gap, min(gap, crashed["BTC/USDT"].loc[t, "low"])]
        server.set_candles(crashed)
        run_cycle(ctx, at(server, data, 1872))
        assert ctx.shadow.pending()["kind"].tolist() == ["stop_loss"]  # sent; its fill is recorded after the close
        run_cycle(ctx, at(server, data, 1873))
    finally:
        server.set_candles(data)
        forget_open_orders(server)
    (exit_order,) = ctx.store.orders().query("intent == 'stop_loss'").itertuples()
    (fill,) = ctx.store.fills(exit_order.client_order_id).itertuples()
    row = ctx.shadow.frame().set_index("client_order_id").loc[exit_order.client_order_id]
    slip = ctx.venue.costs.slippage_bps
    assert row["kind"] == "stop_loss" and row["sim_time"] == t.isoformat()
    assert row["sim_price"] == pytest.approx(gap * (1 - slip / 1e4), rel=1e-12)
    assert row["live_price"] == pytest.approx(fill.price, rel=1e-12)
    assert row["diff_bps"] == pytest.approx(-(fill.price / row["sim_price"] - 1) * 1e4, rel=1e-9)
    assert row["live_delay_s"] == (fill.time - t).total_seconds() > 3600  # sent at the next close
    entry = ctx.shadow.frame().query("kind == 'order'")
    assert len(entry) == 1 and entry["side"].iloc[0] == "buy"  # the entry: compared as every order is


def test_a_stop_the_venue_triggers_starts_the_same_cooldown_as_the_paper_stop_exit(world, tmp_path, monkeypatch):  # noqa: F811
    "The same entry and crash candle, live (the venue's stop fills) and paper (the kernel's exit): one cooldown."
    server, settings, data = world
    ctxs, wants = {}, {}
    for mode in ("live", "paper"):
        paths = settings.paths.model_copy(update={"state_dir": tmp_path / mode})
        s = settings.model_copy(
            update={"mode": mode, "paths": paths, "risk": settings.risk.model_copy(update={"cooldown_bars": 3})}
        )
        ctxs[mode] = build_context(s, KEYS, run_id=mode, confirm_live=True, allow_unproven_model=True)
    assert reconcile(ctxs["live"].executor, PAIRS).ok

    def decide(pair, pred, price, equity, position, **_):
        if wants.get(pair) == "open_long" and position is None:
            return Decision(pair, "open_long", round(0.05 * equity / price, 4), price * 0.9, price * 1.5, ("test",))
        return Decision(pair, "hold", reasons=("test",))

    monkeypatch.setattr(kernel, "decide", decide)
    start = len(server.account.orders)
    try:
        wants["BTC/USDT"] = "open_long"
        for ctx in ctxs.values():
            run_cycle(ctx, at(server, data, 1890))
        del wants["BTC/USDT"]
        (stop,) = open_stops(server, start)
        crashed = {p: df.copy() for p, df in data.items()}
        t = data["BTC/USDT"].index[1891]
        crashed["BTC/USDT"].loc[t, "low"] = stop.stop * 0.9
        server.set_candles(crashed)
        for ctx in ctxs.values():
            run_cycle(ctx, at(server, data, 1892))
        assert stop.status == "FILLED" and all("BTC/USDT" not in c.store.positions() for c in ctxs.values())
        live_exits = ctxs["live"].store.orders()
        assert not live_exits["intent"].isin(["stop_loss"]).any()  # the venue's stop, not the bot's exit
        states = {m: RiskState.from_json(c.store.load_runtime("risk_state")) for m, c in ctxs.items()}
        assert states["live"].cooldown_until["BTC/USDT"] == states["paper"].cooldown_until["BTC/USDT"]
        assert states["live"].cooldown_until["BTC/USDT"] == bar_number(t, "1h") + 3
        wants["BTC/USDT"] = "open_long"  # within the cooldown: refused alike
        for mode, ctx in ctxs.items():
            row = run_cycle(ctx, at(server, data, 1893)).pairs.set_index("pair").loc["BTC/USDT"]
            assert "cooldown after a stop-out" in row["verdict"] and not row["order"], (mode, row.to_dict())
    finally:
        server.set_candles(data)
        forget_open_orders(server)
