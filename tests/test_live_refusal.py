"""What a live cycle refuses while an order's outcome is unknown: only what that order can affect. Its own pair waits
(nothing sent for it, exits included, until a look-up settles it); while it could have spent cash, no pair opens a new
position; exits, stops and targets of the other pairs still go out. A disagreement no open order explains still
refuses the whole cycle. Against the local venue through the real ccxt client, with a really trained tiny model; only
the decision stage is replaced, so that the test chooses what each pair wants to do."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY, candles
from local_exchange import LocalExchange

from morningstar_trader import kernel
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import Settings, load_secrets
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.live_execution import reconcile
from morningstar_trader.training import train_model
from morningstar_trader.types import Decision, Order

KEYS = load_secrets({"MORNINGSTAR_EXCHANGE_API_KEY": "refusal-key", "MORNINGSTAR_EXCHANGE_SECRET": "refusal-secret"})
PAIRS = ("BTC/USDT", "ETH/USDT")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusal")
    data = candles(2_000, end="2024-06-01")
    train = {
        p: validated_bars(df.iloc[:1700].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    train_model(Settings(**TINY), train, root / "models" / "default" / "v1", verbose=0)
    with LocalExchange(data, "1h", now_ms=int(data["BTC/USDT"].index[1800].timestamp() * 1000)) as server:
        settings = Settings(
            **{**TINY, "risk": {"max_position_fraction": 0.3, "cooldown_bars": 0}},
            mode="live",
            pairs=PAIRS,
            exchange={"api_url": server.base_url, "timeout_ms": 1000},
            retry={"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
            paths={"models_dir": root / "models", "state_dir": root / "state", "logs_dir": root / "logs"},
        )
        yield server, settings, data


@pytest.fixture
def live(world, tmp_path, monkeypatch):
    "A live context with a state store of its own, whose decision stage does what `wants[pair]` says."
    server, settings, data = world
    settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"state_dir": tmp_path})})
    ctx = build_context(
        settings, KEYS, run_id="refusal", confirm_live=True, allow_unproven_model=True
    )  # tiny model: no edge
    assert reconcile(ctx.executor, PAIRS).ok  # start-up: the venue's baseline for this store
    wants = {}

    def decide(pair, pred, price, equity, position, **_):
        action = wants.get(pair, "hold")
        if action == "close" and position is None:
            action = "hold"
        size = position.size if action == "close" else round(0.05 * equity / price, 4)
        return Decision(
            pair,
            action,
            size if action != "hold" else 0.0,
            price * 0.9 if action == "open_long" else None,
            price * 1.2 if action == "open_long" else None,
            ("chosen by the test",),
        )

    monkeypatch.setattr(kernel, "decide", decide)  # the kernel decides through decision.decide
    yield server, ctx, data, wants
    forget_open_orders(server)


def forget_open_orders(server):
    "The venue is shared by the module's tests, each with a store of its own: a test's resting orders end with it."
    for o in server.account.orders.values():
        if o.status in ("NEW", "PARTIALLY_FILLED"):
            o.status = "CANCELED"


def at(server, data, k):
    "One second after the close of bar k-1 (bar k opens): the venue's clock, and the cycle's `now`."
    now = data["BTC/USDT"].index[k] + pd.Timedelta(seconds=1)
    server.set_now(int(now.timestamp() * 1000))
    return now


def venue_orders(server, since, symbol=None, stops=False):
    "The venue's orders since the `since`-th: entries and exits, or (`stops`) the positions' stops at the venue."
    return [
        o
        for o in list(server.account.orders.values())[since:]
        if symbol in (None, o.symbol) and (o.type == "STOP_LOSS_LIMIT") == stops
    ]


def held_eth_with_a_breached_stop(server, ctx, data, k):
    assert ctx.executor.place(Order(f"manual-eth-{k}", "ETH/USDT", "buy", 1.0)) == "filled"
    price = data["ETH/USDT"]["close"].iloc[k - 1]
    ctx.store.set_levels("ETH/USDT", price * 1.5, price * 3)  # the stop sits above the price: breached


def unknown_btc_buy(server, ctx, cid):
    """A BTC buy the venue accepted and filled, whose reply was lost and whose look-ups fail: unknown, and balances
    differ."""
    server.inject("/api/v3/order", "slow", method="POST", delay_s=1.5)
    server.inject(
        "/api/v3/order", "notfound", count=3, method="GET"
    )  # three look-ups: the send's, the test's, one cycle's
    server.inject("/api/v3/allOrders", "500", count=3)
    assert ctx.executor.place(Order(cid, "BTC/USDT", "buy", 0.05)) == "unknown"


def rows(report):
    return report.pairs.set_index("pair")


def test_an_unknown_order_holds_its_pair_and_new_entries_but_other_exits_still_go_out(live):
    server, ctx, data, wants = live
    now = at(server, data, 1810)
    held_eth_with_a_breached_stop(server, ctx, data, 1810)
    unknown_btc_buy(server, ctx, "unknown-btc")
    start = len(server.account.orders)
    rec = reconcile(ctx.executor, PAIRS)
    assert rec.contained and rec.cash_uncertain and rec.open_orders == {"unknown-btc": "BTC/USDT"}, rec
    assert rec.mismatches and not rec.unexplained  # the venue filled it: BTC and USDT differ
    wants.update({"BTC/USDT": "open_long", "ETH/USDT": "open_long"})
    report = run_cycle(ctx, now)
    assert "refused" not in {a.kind for a in report.snapshot.alerts}, report.snapshot.alerts
    sent = venue_orders(server, start)
    assert [(o.symbol, o.side) for o in sent] == [("ETHUSDT", "SELL")]  # the stop exit of ETH, nothing else
    assert list(ctx.store.orders().query("pair == 'ETH/USDT' and intent == 'stop_loss'")["status"]) == ["filled"]
    assert "ETH/USDT" not in ctx.store.positions()
    btc, eth = rows(report).loc["BTC/USDT"], rows(report).loc["ETH/USDT"]
    assert btc["action"] == "skipped" and "in flight" in btc["reasons"]  # its own pair waits
    assert eth["action"] == "open_long" and eth["order"] == "" and eth["verdict"].startswith("entry held back")
    assert "unknown-btc" in eth["verdict"]
    assert [(a.kind, a.pair) for a in report.snapshot.alerts if "held back" in a.message] == [("error", "ETH/USDT")]
    # the look-up works again: the order is found filled, store and venue agree, and everything trades
    wants.update({"BTC/USDT": "close"})
    report = run_cycle(ctx, at(server, data, 1811))
    assert ctx.store.order("unknown-btc")["status"] == "filled"
    assert all(r.order.startswith("ms-") for r in report.pairs.itertuples()), report.pairs.to_dict("records")
    assert sorted((o.symbol, o.side) for o in venue_orders(server, start + 1)) == [
        ("BTCUSDT", "SELL"),
        ("ETHUSDT", "BUY"),
    ]
    assert [(o.symbol, o.side, o.status) for o in venue_orders(server, start + 1, stops=True)] == [
        ("ETHUSDT", "SELL", "NEW")
    ]  # the new ETH position's stop rests at the venue
    assert reconcile(ctx.executor, PAIRS).ok
    assert not any("held back" in a.message for a in report.snapshot.alerts)


def test_an_unknown_exit_holds_only_its_pair(live):
    server, ctx, data, wants = live
    now = at(server, data, 1820)
    assert ctx.executor.place(Order("btc-held", "BTC/USDT", "buy", 0.05)) == "filled"
    server.inject("/api/v3/order", "503", method="POST")  # the exit never reached the venue: unknown for a while
    assert ctx.executor.place(Order("btc-exit", "BTC/USDT", "sell", 0.05, intent="close")) == "unknown"
    ctx.executor.grace_s = 60  # and it stays unknown for this test
    start = len(server.account.orders)
    wants.update({"BTC/USDT": "close", "ETH/USDT": "open_long"})
    report = run_cycle(ctx, now)
    assert rows(report).loc["BTC/USDT", "action"] == "skipped"  # no second exit while the first is unknown
    assert rows(report).loc["ETH/USDT", "order"].startswith("ms-")  # a sell spends no cash: the entry goes out
    assert [(o.symbol, o.side) for o in venue_orders(server, start)] == [("ETHUSDT", "BUY")]
    assert "refused" not in {a.kind for a in report.snapshot.alerts}


def test_a_disagreement_no_open_order_explains_still_refuses_the_whole_cycle(live):
    server, ctx, data, wants = live
    now = at(server, data, 1830)
    held_eth_with_a_breached_stop(server, ctx, data, 1830)
    unknown_btc_buy(server, ctx, "unknown-btc-2")
    server.account.balances["ETH"] += 0.5  # ETH moved behind the store's back: no order explains it
    rec = reconcile(ctx.executor, PAIRS)
    assert not rec.contained and rec.unexplained and all(m.startswith("ETH") for m in rec.unexplained)
    start = len(server.account.orders)
    wants.update({"ETH/USDT": "open_long"})
    report = run_cycle(ctx, now)
    assert set(report.pairs["action"]) == {"skipped"} and venue_orders(server, start) == []  # not even the ETH stop
    assert [a.level for a in report.snapshot.alerts if a.kind == "refused"] == ["critical"]
