"""The live executor against the local Binance-compatible server through the real ccxt client: outcomes of every
kind of failure on the order path, fills by trade id, cancels, reconciliation."""

from __future__ import annotations

import inspect

import ccxt
import pytest
from ccxt.base import errors as ccxt_errors
from conftest import HOUR_MS, candles
from local_exchange import LocalExchange

from morningstar_trader.config import ExchangeSettings, load_secrets
from morningstar_trader.live_execution import RECENT, LiveExecutor, create_outcome, reconcile
from morningstar_trader.market_data import make_exchange
from morningstar_trader.portfolio import PortfolioStore
from morningstar_trader.types import Order

KEYS = load_secrets({"MORNINGSTAR_EXCHANGE_API_KEY": "test-key", "MORNINGSTAR_EXCHANGE_SECRET": "test-secret"})
PAIRS = ("BTC/USDT", "ETH/USDT")

# Every exception class of the pinned ccxt and what it proves when create_order raises it.
OUTCOMES = {
    "BaseError": "unknown",
    "ExchangeError": "unknown",
    "OperationFailed": "unknown",
    "UnsubscribeError": "unknown",
    "AuthenticationError": "rejected",
    "PermissionDenied": "rejected",
    "AccountNotEnabled": "rejected",
    "AccountSuspended": "rejected",
    "ArgumentsRequired": "rejected",
    "BadRequest": "rejected",
    "BadSymbol": "rejected",
    "OperationRejected": "rejected",
    "NoChange": "rejected",
    "MarginModeAlreadySet": "rejected",
    "MarketClosed": "rejected",
    "ManualInteractionNeeded": "rejected",
    "RestrictedLocation": "rejected",
    "InsufficientFunds": "rejected",
    "InvalidAddress": "rejected",
    "AddressPending": "rejected",
    "InvalidOrder": "rejected",
    "OrderNotFound": "rejected",
    "OrderNotCached": "rejected",
    "OrderImmediatelyFillable": "rejected",
    "OrderNotFillable": "rejected",
    "DuplicateOrderId": "unknown",
    "ContractUnavailable": "rejected",
    "NotSupported": "rejected",
    "InvalidProxySettings": "rejected",
    "ExchangeClosedByUser": "rejected",
    "NetworkError": "unknown",
    "DDoSProtection": "unknown",
    "RateLimitExceeded": "unknown",
    "ExchangeNotAvailable": "unknown",
    "OnMaintenance": "unknown",
    "InvalidNonce": "unknown",
    "ChecksumError": "unknown",
    "RequestTimeout": "unknown",
    "BadResponse": "unknown",
    "NullResponse": "unknown",
    "CancelPending": "unknown",
}


def test_every_ccxt_exception_has_a_known_outcome():
    classes = {n: c for n, c in vars(ccxt_errors).items() if inspect.isclass(c) and issubclass(c, Exception)}
    assert set(classes) == set(OUTCOMES), "ccxt's exceptions changed: classify the new ones"
    assert {n: create_outcome(c("x")) for n, c in classes.items()} == OUTCOMES
    assert create_outcome(ConnectionResetError()) == "unknown"


class Clock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        import time

        return time.time() + self.offset


@pytest.fixture
def venue(tmp_path):
    data = candles(200)
    with LocalExchange(
        data,
        "1h",
        now_ms=int(data["BTC/USDT"].index[-1].timestamp() * 1000) + HOUR_MS // 2,
        balances={"USDT": 50_000.0, "BTC": 0.5},
    ) as server:
        exchange = make_exchange(ExchangeSettings(api_url=server.base_url, timeout_ms=2000), KEYS)
        exchange.options["recvWindow"] = 1000
        exchange.load_markets()
        store = PortfolioStore(tmp_path / "live.sqlite", initial_cash=50_000.0)
        clock = Clock()
        executor = LiveExecutor(exchange, store, clock_skew_s=1.0, order_timeout_s=0.5, clock=clock)
        assert reconcile(executor, PAIRS).ok  # baseline: the 0.5 BTC held before
        yield server, executor, clock


def posts(server):
    return [r for r in server.requests if r["method"] == "POST" and r["path"] == "/api/v3/order"]


def venue_orders(server, cid):
    return [o for o in server.account.orders.values() if o.client_id == cid]


def agree(server, executor):
    result = reconcile(executor, PAIRS)
    assert result.ok, result.why()


def test_a_market_order_fills_and_the_store_matches_the_venue(venue):
    server, ex, _ = venue
    assert ex.place(Order("c-1", "BTC/USDT", "buy", 0.1234567)) == "filled"
    assert ex.place(Order("c-1", "BTC/USDT", "buy", 0.1234567)) == "filled"  # the same intent again: nothing sent
    assert len(posts(server)) == 1 and len(venue_orders(server, "c-1")) == 1
    assert ex.store.positions()["BTC/USDT"].size == pytest.approx(0.12345)  # cut down to the market's step, never up
    agree(server, ex)


def test_accepted_then_timed_out_is_looked_up_not_resent(venue):
    server, ex, _ = venue
    server.inject("/api/v3/order", "slow", method="POST", delay_s=3)  # the venue fills it; the reply comes too late
    server.inject("/api/v3/order", "notfound", count=2, method="GET")  # and look-ups lag behind
    assert ex.place(Order("c-2", "ETH/USDT", "buy", 1.0)) == "filled"
    assert len(posts(server)) == 1 and len(venue_orders(server, "c-2")) == 1
    assert "RequestTimeout" in ex.store.order("c-2")["note"]
    agree(server, ex)


def test_a_request_that_never_arrived_stays_unknown_until_the_receive_window_passed(venue):
    server, ex, clock = venue
    server.inject("/api/v3/order", "503", method="POST")  # refused by the front end: never placed
    assert ex.place(Order("c-3", "BTC/USDT", "sell", 0.1)) == "unknown"
    assert not reconcile(ex, PAIRS).ok  # the cycle must not trade now
    pages = [r["query"].get("limit") for r in server.requests if r["path"] == "/api/v3/allOrders"]
    assert pages and set(pages) == {str(RECENT)}  # a "not found" that decides nothing reads the newest orders only
    clock.offset = ex.grace_s + 0.1
    assert ex.resolve("c-3") == "rejected" and "never reached the venue" in ex.store.order("c-3")["note"]
    last = [r["query"] for r in server.requests if r["path"] == "/api/v3/allOrders"][-1]
    assert "limit" not in last  # the deciding look-up reads the full page (Binance's newest 500)
    assert len(posts(server)) == 1 and venue_orders(server, "c-3") == []
    agree(server, ex)


def test_an_executor_without_a_clock_counts_the_receive_window_on_its_stores(venue, tmp_path):
    server, ex, _ = venue
    stores_clock = Clock()  # what a soak sets to the venue's simulated time
    store = PortfolioStore(tmp_path / "other.sqlite", initial_cash=50_000.0, clock=stores_clock)
    executor = LiveExecutor(ex.exchange, store, clock_skew_s=1.0, order_timeout_s=0.5)
    server.inject("/api/v3/order", "503", method="POST")
    assert executor.place(Order("c-9", "BTC/USDT", "buy", 0.1)) == "unknown"
    assert executor.resolve("c-9") == "unknown"
    stores_clock.offset = executor.grace_s + 0.1  # the rows and the executor move together
    assert executor.resolve("c-9") == "rejected" and venue_orders(server, "c-9") == []


def test_rejections_are_final_and_never_retried(venue):
    server, ex, _ = venue
    server.inject("/api/v3/order", "reject", method="POST")
    assert ex.place(Order("c-4", "BTC/USDT", "buy", 0.01)) == "rejected"
    assert ex.place(Order("c-4", "BTC/USDT", "buy", 0.01)) == "rejected"
    assert len(posts(server)) == 1
    assert ex.place(Order("c-5", "BTC/USDT", "buy", 0.00001)) == "rejected"  # below the minimum notional: never sent
    assert len(posts(server)) == 1 and "minimum" in ex.store.order("c-5")["note"]
    server.inject("/api/v3/order", "429", method="POST")  # rate limited: unknown, then resolved by look-up
    assert ex.place(Order("c-6", "BTC/USDT", "buy", 0.01)) == "unknown"
    agree_later = reconcile(ex, PAIRS)
    assert agree_later.unresolved == ("c-6",)


def test_partial_fill_then_timeout_cancels_and_keeps_the_filled_part(venue):
    server, ex, _ = venue
    price = server.price_now("ETH/USDT")
    server.inject("/api/v3/order", "partial", method="POST")
    assert ex.place(Order("c-7", "ETH/USDT", "buy", 2.0, "limit", round(price * 1.01, 2))) == "partially_filled"
    assert ex.settle("c-7") == "cancelled"
    row = ex.store.order("c-7")
    assert row["filled"] == pytest.approx(0.8) and ex.store.positions()["ETH/USDT"].size == pytest.approx(0.8)
    agree(server, ex)


def test_an_order_that_fills_while_being_cancelled_is_recorded_as_filled(venue):
    server, ex, _ = venue
    price = server.price_now("ETH/USDT")
    assert ex.place(Order("c-8", "ETH/USDT", "buy", 1.0, "limit", round(price * 0.9, 2))) == "submitted"  # rests
    server.fill_open("c-8")  # fills just before the cancel arrives
    assert ex.cancel("c-8") == "filled"
    assert len(ex.store.orders().query("client_order_id == 'c-8'")) == 1
    ex.sync("c-8")
    ex.sync("c-8")  # repeated look-ups record each trade once
    assert ex.store.positions()["ETH/USDT"].size == pytest.approx(1.0)
    agree(server, ex)


def test_two_trades_are_recorded_once_each_and_a_restart_keeps_the_book(venue):
    server, ex, _ = venue
    server.inject("/api/v3/order", "split", method="POST")
    assert ex.place(Order("c-9", "BTC/USDT", "buy", 0.2)) == "filled"
    server.stop()
    server.start()  # the venue restarts with its book
    assert ex.sync("c-9") == "filled"
    trades = [t for t in server.account.trades if t["orderId"] == venue_orders(server, "c-9")[0].id]
    assert len(trades) == 2 and ex.store.positions()["BTC/USDT"].size == pytest.approx(0.2)
    agree(server, ex)


def test_reconciliation_flags_external_orders_mismatches_and_a_venue_it_cannot_reach(venue):
    server, ex, _ = venue
    other = make_exchange(ExchangeSettings(api_url=server.base_url, timeout_ms=1000), KEYS)
    other.create_order(
        "ETH/USDT", "limit", "buy", 1.0, round(server.price_now("ETH/USDT") * 0.5, 2), {"newClientOrderId": "by-hand"}
    )
    result = reconcile(ex, PAIRS)
    assert not result.ok and len(result.external) == 1 and "external" in result.why()
    assert ex.store.orders().query("intent == 'external'")["note"].str.contains("by-hand").all()
    ex.grace_s = 0.0  # past the venue's receive window: each order must be found, or it is an error
    assert reconcile(ex, PAIRS).external == ()  # recorded once, not flagged again
    server.account.balances["BTC"] += 0.25  # a deposit (or a trade) the store knows nothing of
    assert any("BTC" in m for m in reconcile(ex, PAIRS).mismatches)
    server.stop()
    assert reconcile(ex, PAIRS).errors


def test_the_venues_order_and_trade_lists_are_bounded_as_binances(venue):
    "allOrders and myTrades answer the newest 500 unless asked (at most 1,000), so a look-up never reads the history."
    server, ex, _ = venue
    for k in range(3):
        assert ex.place(Order(f"l-{k}", "BTC/USDT", "buy", 0.01)) == "filled"
    newest = ex.exchange.fetch_orders("BTC/USDT", limit=2)
    assert [o["clientOrderId"] for o in newest] == ["l-1", "l-2"]
    assert len(ex.exchange.fetch_my_trades("BTC/USDT", limit=1)) == 1
    with pytest.raises(ccxt.BadRequest, match="legal range"):
        ex.exchange.fetch_orders("BTC/USDT", limit=1_001)
