"""An order's timeout holds within its cycle (issue 26): once a live close has sent its orders, an order that does not
rest by design and is still open `live.order_timeout_s` after it was created is cancelled in that same close (the
cancel re-checks its fills), and a position it left gets its stop at the venue at once. A limit entry rests by design
(tests/test_live_limit.py). Against the local venue through the real ccxt client; only the decision stage is
replaced, as in tests/test_live_refusal.py."""

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
from morningstar_trader.live_execution import reconcile
from morningstar_trader.types import Decision, Order

TIMEOUT_S = 0.3


@pytest.fixture
def live(world, tmp_path, monkeypatch):  # noqa: F811
    server, settings, data = world
    settings = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update={"state_dir": tmp_path}),
            "live": settings.live.model_copy(update={"order_timeout_s": TIMEOUT_S}),
        }
    )
    ctx = build_context(settings, KEYS, run_id="timeout", confirm_live=True, allow_unproven_model=True)
    assert reconcile(ctx.executor, PAIRS).ok
    wants = {}

    def decide(pair, pred, price, equity, position, **_):
        if position is not None or wants.pop(pair, None) != "open_long":
            return Decision(pair, "hold", reasons=("test",))
        return Decision(pair, "open_long", round(0.05 * equity / price, 4), price * 0.9, price * 1.2, ("test",))

    monkeypatch.setattr(kernel, "decide", decide)
    yield server, ctx, data, wants
    forget_open_orders(server)


def test_a_partly_filled_entry_is_cancelled_at_its_timeout_within_its_cycle_and_what_filled_is_protected(live):
    server, ctx, data, wants = live
    start = len(server.account.orders)
    server.inject("/api/v3/order", "partial", method="POST")  # the market entry fills 40 %, the rest stays open
    wants["BTC/USDT"] = "open_long"
    report = run_cycle(ctx, at(server, data, 1900))
    (entry,) = venue_orders(server, start, "BTCUSDT")
    assert entry.type == "MARKET" and entry.status == "CANCELED"  # in this cycle, not at the next one
    assert entry.executed == pytest.approx(entry.qty * 0.4)
    row = ctx.store.order(entry.client_id)
    assert row["status"] == "cancelled" and row["filled"] == pytest.approx(entry.executed)
    pos = ctx.store.positions()["BTC/USDT"]
    assert pos.size == pytest.approx(entry.executed) and pos.stop_loss is not None
    (stop,) = [o for o in venue_orders(server, start, "BTCUSDT", stops=True) if o.status == "NEW"]
    assert stop.qty == pytest.approx(entry.executed)  # what filled is protected in the same cycle
    assert report.audit.orders.set_index("client_order_id").loc[entry.client_id, "status"] == "cancelled"
    assert reconcile(ctx.executor, PAIRS).ok


def test_a_resting_limit_order_that_is_not_an_entry_is_cancelled_at_its_timeout(live):
    server, ctx, data, wants = live
    at(server, data, 1905)
    start, price = len(server.account.orders), server.price_now("ETH/USDT")
    cid = "manual-limit-buy"
    order = Order(cid, "ETH/USDT", "buy", 0.5, "limit", round(price * 0.8, 2), intent="close")
    assert ctx.executor.place(order) == "submitted"  # far below the market: it rests
    assert ctx.venue.follow() == {cid: "cancelled"}
    (sent,) = venue_orders(server, start, "ETHUSDT")
    assert sent.status == "CANCELED" and ctx.store.order(cid)["status"] == "cancelled"
    assert ctx.venue.follow() == {}  # nothing left to follow
