"""ApiManager against the local Binance-compatible server, through the real ccxt client over HTTP."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from morningstar_trader.config import ExchangeSettings, RetrySettings
from morningstar_trader.market_data import ApiManager, MarketDataError

FAST_RETRY = RetrySettings(max_attempts=3, initial_delay_s=0.01, max_delay_s=0.05)


def manager(server, **settings) -> ApiManager:
    return ApiManager(
        ExchangeSettings(api_url=server.base_url, timeout_ms=settings.pop("timeout_ms", 1500), **settings), FAST_RETRY
    )


def klines(server) -> list[dict]:
    return [r for r in server.requests if r["path"] == "/api/v3/klines"]


def test_every_url_ccxt_may_call_is_on_loopback(exchange):
    api = manager(exchange)

    def urls(tree):
        return [u for v in tree.values() for u in urls(v)] if isinstance(tree, dict) else [tree]

    assert urls(api.exchange.urls["api"]) and all(
        u.startswith(exchange.base_url + "/") for u in urls(api.exchange.urls["api"])
    )
    api.fetch_ohlcv("BTC/USDT", "1h", "2024-05-30")
    assert exchange.requests and all(r["status"] == 200 for r in exchange.requests)


def test_pages_through_the_range_and_drops_the_forming_candle(exchange):
    api = manager(exchange)
    full = exchange.data["BTC/USDT"]
    bars, report = api.fetch_ohlcv("BTC/USDT", "1h", full.index[0], page_limit=1000)
    assert len(klines(exchange)) == 4  # 3,500 closed candles, 1,000 a page
    assert len(bars) == 3_500 and bars.end == full.index[-2]  # the forming candle (last served) is gone
    expected = full.iloc[:-1].rename_axis("timestamp")
    expected.index = expected.index.as_unit("ns")
    pd.testing.assert_frame_equal(bars.frame, expected, check_freq=False)
    assert report.rows_ok == 3_500 and report.rejected.empty and report.gaps.empty


def test_range_end_is_exclusive_and_start_is_aligned_to_the_grid(exchange):
    bars, _ = manager(exchange).fetch_ohlcv("ETH/USDT", "1h", "2024-05-01 10:30", "2024-05-02 00:00")
    assert bars.start == pd.Timestamp("2024-05-01 11:00", tz="UTC")
    assert bars.end == pd.Timestamp("2024-05-01 23:00", tz="UTC") and len(bars) == 13


@pytest.mark.parametrize("kind", ["429", "500", "503"])
def test_temporary_errors_are_retried(exchange, kind):
    exchange.inject("/api/v3/klines", kind, count=2, after=1)
    bars, _ = manager(exchange).fetch_ohlcv("BTC/USDT", "1h", "2024-04-01", page_limit=500)
    assert len(bars) == len(exchange.data["BTC/USDT"].loc["2024-04-01":]) - 1
    assert [r["status"] for r in klines(exchange)][:4] == [200, int(kind), int(kind), 200]


def test_a_slow_exchange_times_out_and_is_retried_then_gives_up(exchange):
    exchange.inject("/api/v3/klines", "slow", count=3, delay_s=1.0)
    with pytest.raises(MarketDataError, match=r"after 3 attempts: RequestTimeout"):
        manager(exchange, timeout_ms=300).fetch_ohlcv("BTC/USDT", "1h", "2024-05-30")
    deadline = (
        time.time() + 5
    )  # on a loaded machine the server thread may log the last request after the client gave up
    while len(klines(exchange)) < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert len(klines(exchange)) == 3


def test_permanent_errors_are_not_retried(exchange):
    api = manager(exchange)
    with pytest.raises(MarketDataError, match=r"no spot market 'BTC/USDX'; did you mean BTC/USDT"):
        api.fetch_ohlcv("BTC/USDX", "1h", "2024-05-30")
    with pytest.raises(MarketDataError, match=r"\(not retried\): BadRequest"):
        api.fetch_ohlcv("BTC/USDT", "4h", "2024-05-30")  # the server only has 1h candles: -1120 invalid interval
    assert len(klines(exchange)) == 1


def test_garbage_from_the_exchange_is_an_error_not_data(exchange):
    exchange.inject("/api/v3/klines", "garbage")
    api = manager(exchange)
    with pytest.raises(MarketDataError, match="not JSON"):
        api.fetch_ohlcv("BTC/USDT", "1h", "2024-05-30")
    # a later call served from ccxt's cache is not judged by the earlier garbage answer
    assert "BTC/USDT" in api.load_markets() and len(api.fetch_ohlcv("ETH/USDT", "1h", "2024-05-30")[0]) > 0


def test_exchange_down_fails_with_a_clear_error():
    api = ApiManager(ExchangeSettings(api_url="http://127.0.0.1:9", timeout_ms=500), FAST_RETRY)
    with pytest.raises(
        MarketDataError, match=r"binance: load_markets failed after 3 attempts: (ExchangeNotAvailable|NetworkError)"
    ):
        api.fetch_ohlcv("BTC/USDT", "1h", "2024-05-30")
