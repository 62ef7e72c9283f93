"""Limit entries (`execution.order_type: limit`) in live mode, against the local venue through the real ccxt client: an
entry rests at the close minus `limit_offset_bps`, gets its stop and target once it fills, and is cancelled
`limit_ttl_bars` candles after its decision, the pair then decided again. The live executor's `order_timeout_s` never
cancels a resting limit entry (its life is counted in candles). Only the decision stage is replaced, as in
tests/test_live_refusal.py, so that the test chooses what each pair wants."""

from __future__ import annotations

import pytest
from test_live_refusal import KEYS, PAIRS, at, forget_open_orders, venue_orders, world  # noqa: F401  (world: the trained model and venue)

from morningstar_trader import kernel
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.live_execution import reconcile
from morningstar_trader.types import Decision

OFFSET_BPS, TTL = 300, 2


@pytest.fixture
def live(world, tmp_path, monkeypatch):  # noqa: F811
    server, settings, data = world
    settings = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update={"state_dir": tmp_path}),
            "execution": settings.execution.model_copy(
                update={"order_type": "limit", "limit_offset_bps": OFFSET_BPS, "limit_ttl_bars": TTL}
            ),
        }
    )
    ctx = build_context(
        settings, KEYS, run_id="limit", confirm_live=True, allow_unproven_model=True
    )  # tiny model: no edge
    ctx.executor.order_timeout_s = 0.001  # an order older than this would be cancelled, were it not resting
    assert reconcile(ctx.executor, PAIRS).ok
    wants = {}

    def decide(pair, pred, price, equity, position, **_):
        if position is not None or wants.get(pair) != "open_long":
            return Decision(pair, "hold", reasons=("test",))
        return Decision(
            pair, "open_long", round(0.05 * equity / price, 4), price * 0.9, price * 1.2, ("chosen by the test",)
        )

    monkeypatch.setattr(kernel, "decide", decide)
    yield server, ctx, data, wants
    forget_open_orders(server)


def entry(server, start, symbol):
    sent = venue_orders(server, start, symbol)
    assert len(sent) == 1 and sent[0].type == "LIMIT" and sent[0].side == "BUY", sent
    return sent[0]


def test_a_limit_entry_rests_below_the_close_and_gets_its_levels_when_it_fills(live):
    server, ctx, data, wants = live
    start, close = len(server.account.orders), data["BTC/USDT"]["close"].iloc[1839]
    wants["BTC/USDT"] = "open_long"
    run_cycle(ctx, at(server, data, 1840))
    order = entry(server, start, "BTCUSDT")
    assert order.price == pytest.approx(close * (1 - OFFSET_BPS / 1e4), rel=1e-4)
    assert order.status == "NEW" and "BTC/USDT" not in ctx.store.positions()
    run_cycle(ctx, at(server, data, 1841))  # a second cycle: still resting, not cancelled by order_timeout_s
    assert order.status == "NEW" and len(venue_orders(server, start, "BTCUSDT")) == 1
    server.fill_open(order.client_id)
    run_cycle(ctx, at(server, data, 1842))  # within its ttl: it filled, and the position has its levels
    pos = ctx.store.positions()["BTC/USDT"]
    assert pos.size == pytest.approx(order.qty) and pos.stop_loss == pytest.approx(close * 0.9)
    assert pos.take_profit == pytest.approx(close * 1.2)
    assert len(venue_orders(server, start, "BTCUSDT")) == 1  # no second entry
    assert reconcile(ctx.executor, PAIRS).ok


def test_an_unfilled_limit_entry_is_cancelled_after_its_ttl_and_the_pair_decided_again(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    wants["ETH/USDT"] = "open_long"
    run_cycle(ctx, at(server, data, 1850))
    first = entry(server, start, "ETHUSDT")
    run_cycle(ctx, at(server, data, 1851))
    assert first.status == "NEW"
    run_cycle(ctx, at(server, data, 1850 + TTL))  # TTL candles after the decision: cancelled, and a new entry decided
    assert first.status == "CANCELED"
    assert ctx.store.order(first.client_id)["status"] == "cancelled"
    again = [o for o in venue_orders(server, start, "ETHUSDT") if o is not first]
    close = data["ETH/USDT"]["close"].iloc[1850 + TTL - 1]
    assert len(again) == 1 and again[0].status == "NEW"
    assert again[0].price == pytest.approx(close * (1 - OFFSET_BPS / 1e4), rel=1e-4)
    assert "ETH/USDT" not in ctx.store.positions() and reconcile(ctx.executor, PAIRS).ok
