"""The real ccxt.binance client against tests/local_exchange.py, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import ccxt
import numpy as np
import pandas as pd
import pytest
from local_exchange import LocalExchange

pytestmark = pytest.mark.timeout(5)

TF_MS = 3_600_000
N_CANDLES = 1200  # more than Binance's 1000-row cap, so the cap is observable
FORMING = 1100  # index of the candle containing the server's clock
START = pd.Timestamp("2024-01-01", tz="UTC")
NOW_MS = int(START.timestamp() * 1000) + FORMING * TF_MS + 25 * 60_000


def make_candles(n: int, seed: int, first_price: float) -> pd.DataFrame:
    """Hourly random-walk candles with consistent high/low, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    close = first_price * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    open_ = np.concatenate([[first_price], close[:-1]])
    wick_up, wick_down = np.abs(rng.normal(0.0, 0.002, (2, n)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick_up),
            "low": np.minimum(open_, close) * (1 - wick_down),
            "close": close,
            "volume": rng.gamma(2.0, 5.0, n),
        },
        index=pd.date_range(START, periods=n, freq="1h", tz="UTC"),
    )


CANDLES = {
    "BTC/USDT": make_candles(N_CANDLES, seed=1, first_price=60_000.0),
    "ETH/USDT": make_candles(N_CANDLES, seed=2, first_price=3_000.0),
}
BTC = CANDLES["BTC/USDT"]


def open_ms(i: int) -> int:
    return int(BTC.index[i].timestamp() * 1000)


def expected_rows(lo: int, hi: int) -> list[list[float]]:
    return [[open_ms(i), *map(float, BTC.iloc[i][["open", "high", "low", "close", "volume"]])] for i in range(lo, hi)]


def new_client() -> ccxt.binance:
    # Constructed exactly as the trading code does (design notes).
    return ccxt.binance(
        {
            "enableRateLimit": True,
            "timeout": 3000,
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchMargins": False, "fetchCurrencies": False},
        }
    )


@pytest.fixture
def server() -> Iterator[LocalExchange]:
    with LocalExchange(CANDLES, "1h", now_ms=NOW_MS) as srv:
        yield srv


@pytest.fixture
def ex(server: LocalExchange) -> ccxt.binance:
    client = new_client()
    server.point(client)
    return client


@pytest.fixture
def loaded(server: LocalExchange, ex: ccxt.binance) -> ccxt.binance:
    """A client with markets loaded and the server log cleared, so tests see only their own requests."""
    ex.load_markets()
    server.requests.clear()
    return ex


def walk_urls(api: Any) -> Iterator[str]:
    if isinstance(api, dict):
        for value in api.values():
            yield from walk_urls(value)
    else:
        yield api


def test_point_rewrites_every_api_url_keeping_its_path(server: LocalExchange) -> None:
    client = new_client()
    original = dict(client.urls["api"])
    server.point(client)
    assert client.urls["api"].keys() == original.keys()
    assert all(url.startswith("http://127.0.0.1:") for url in walk_urls(client.urls["api"]))
    for key, url in original.items():
        assert client.urls["api"][key] == server.base_url + urlsplit(url).path
    assert client.urls["api"]["public"] == f"{server.base_url}/api/v3"
    assert client.urls["api"]["fapiPublic"] == f"{server.base_url}/fapi/v1"


def test_all_ccxt_traffic_reaches_the_local_server(server: LocalExchange, ex: ccxt.binance) -> None:
    sent: list[str] = []
    fetch = ex.fetch

    def recording_fetch(url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(url)
        return fetch(url, *args, **kwargs)

    ex.fetch = recording_fetch
    assert server.requests == []
    ex.load_markets()
    ex.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(0), limit=5)
    ex.fetch_ticker("BTC/USDT")
    assert ex.fetch_time() == NOW_MS

    assert all(url.startswith(server.base_url + "/") for url in sent)
    assert (
        [r["path"] for r in server.requests]
        == [urlsplit(url).path for url in sent]
        == ["/api/v3/exchangeInfo", "/api/v3/klines", "/api/v3/ticker/24hr", "/api/v3/time"]
    )
    assert all(r["method"] == "GET" and r["status"] == 200 for r in server.requests)
    assert server.requests[1]["query"] == {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "limit": "5",
        "startTime": str(open_ms(0)),
    }


def test_load_markets_parses_served_precision_and_limits(ex: ccxt.binance) -> None:
    markets = ex.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["type"], btc["spot"], btc["active"]) == (
        "BTCUSDT",
        "BTC",
        "USDT",
        "spot",
        True,
        True,
    )
    assert btc["precision"] == {"price": 0.01, "amount": 0.00001, "base": 1e-8, "quote": 1e-8}
    assert btc["limits"]["amount"] == {"min": 0.00001, "max": 9000.0}
    assert btc["limits"]["price"] == {"min": 0.01, "max": 1_000_000.0}
    assert btc["limits"]["cost"] == {"min": 5.0, "max": 9_000_000.0}
    assert markets["ETH/USDT"]["precision"]["amount"] == 0.0001  # step scales with the price level


def test_fetch_ohlcv_returns_fixture_candles_exactly_across_pages(loaded: ccxt.binance) -> None:
    first = loaded.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(10), limit=100)
    second = loaded.fetch_ohlcv("BTC/USDT", "1h", since=first[-1][0] + TF_MS, limit=100)
    assert first == expected_rows(10, 110)
    assert second == expected_rows(110, 210)
    assert all(type(v) is float for row in first for v in row[1:])


def test_klines_window_semantics(server: LocalExchange, loaded: ccxt.binance) -> None:
    latest = loaded.fetch_ohlcv("BTC/USDT", "1h")  # no since: the most recent 500, forming one last
    assert latest == expected_rows(FORMING + 1 - 500, FORMING + 1)
    until = loaded.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(10), params={"until": open_ms(20)})
    assert until == expected_rows(10, 21)  # endTime is inclusive of an open time
    # ccxt clamps limit to 1000 itself, so ask the endpoint directly to see the server's own cap.
    raw = loaded.publicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "startTime": open_ms(0), "limit": 1500})
    assert len(raw) == 1000
    assert raw[0][:6] == [open_ms(0), *(repr(float(v)) for v in BTC.iloc[0])]
    assert raw[0][6] == open_ms(0) + TF_MS - 1  # closeTime
    assert [r["query"].get("limit") for r in server.requests] == ["500", "1000", "1500"]


def test_forming_candle_is_served_and_future_ones_are_not(server: LocalExchange, loaded: ccxt.binance) -> None:
    rows = loaded.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(FORMING - 5), limit=50)
    assert len(rows) == 6
    assert rows[-1][0] <= NOW_MS < rows[-1][0] + TF_MS
    assert rows == expected_rows(FORMING - 5, FORMING + 1)

    server.set_now(NOW_MS + 3 * TF_MS)
    rows = loaded.fetch_ohlcv("BTC/USDT", "1h", since=open_ms(FORMING - 5), limit=50)
    assert rows == expected_rows(FORMING - 5, FORMING + 4)


def test_tickers_report_the_last_visible_close(loaded: ccxt.binance) -> None:
    last_close = float(BTC["close"].iloc[FORMING])
    ticker = loaded.fetch_ticker("BTC/USDT")
    assert (ticker["last"], ticker["timestamp"]) == (last_close, NOW_MS)
    assert loaded.publicGetTickerPrice({"symbol": "BTCUSDT"}) == {"symbol": "BTCUSDT", "price": repr(last_close)}


@pytest.mark.parametrize(
    ("kind", "raised"),
    [
        # ccxt.binance.handle_errors maps both 418 and 429 to DDoSProtection before reading the
        # JSON code, so RateLimitExceeded (its subclass) is never what arrives.
        ("429", ccxt.DDoSProtection),
        ("418", ccxt.DDoSProtection),
        ("500", ccxt.ExchangeNotAvailable),
        ("503", ccxt.ExchangeNotAvailable),
    ],
)
def test_http_faults_raise_network_errors(
    server: LocalExchange, loaded: ccxt.binance, kind: str, raised: type[Exception]
) -> None:
    server.inject("/api/v3/klines", kind)
    with pytest.raises(ccxt.BaseError) as err:
        loaded.fetch_ohlcv("BTC/USDT", "1h", limit=3)
    assert type(err.value) is raised
    assert issubclass(raised, ccxt.NetworkError)  # so ccxt-aware retry loops treat them as transient
    assert len(loaded.fetch_ohlcv("BTC/USDT", "1h", limit=3)) == 3  # one-shot fault
    assert [r["status"] for r in server.requests] == [int(kind), 200]


def test_slow_answer_past_the_client_timeout_raises_request_timeout(
    server: LocalExchange, loaded: ccxt.binance
) -> None:
    loaded.timeout = 300
    server.inject("/api/v3/klines", "slow", delay_s=1.0)
    with pytest.raises(ccxt.BaseError) as err:
        loaded.fetch_ohlcv("BTC/USDT", "1h", limit=3)
    assert type(err.value) is ccxt.RequestTimeout
    assert issubclass(ccxt.RequestTimeout, ccxt.NetworkError)
    assert len(loaded.fetch_ohlcv("BTC/USDT", "1h", limit=3)) == 3


def test_garbage_body_is_not_an_error_to_ccxt(server: LocalExchange, loaded: ccxt.binance) -> None:
    # ccxt hands a 200 non-JSON body to the parser as a string and raises nothing: klines come back
    # as rows of None. Code consuming fetch_ohlcv has to validate rows itself.
    server.inject("/api/v3/klines", "garbage")
    assert loaded.fetch_ohlcv("BTC/USDT", "1h", limit=3) == [[None] * 6] * 3


def test_bad_symbol_and_interval(server: LocalExchange, loaded: ccxt.binance) -> None:
    with pytest.raises(ccxt.BadSymbol):
        loaded.fetch_ohlcv("XRP/USDT", "1h")  # rejected by ccxt itself, from the loaded markets
    assert server.requests == []
    with pytest.raises(ccxt.BaseError) as err:
        loaded.publicGetKlines({"symbol": "XRPUSDT", "interval": "1h"})
    assert type(err.value) is ccxt.BadSymbol and '"code": -1121' in str(err.value)
    with pytest.raises(ccxt.BaseError) as err:
        loaded.fetch_ohlcv("BTC/USDT", "5m")
    assert type(err.value) is ccxt.BadRequest and '"code": -1120' in str(err.value)
    assert [r["status"] for r in server.requests] == [400, 400]


def test_inject_skips_after_then_faults_count_requests_on_matching_paths(
    server: LocalExchange, loaded: ccxt.binance
) -> None:
    server.inject("/api/v3/klines", "500", count=2, after=1)
    outcomes = []
    for _ in range(4):
        try:
            loaded.fetch_ohlcv("BTC/USDT", "1h", limit=2)
            outcomes.append("ok")
        except ccxt.ExchangeNotAvailable:
            outcomes.append("fault")
        loaded.fetch_time()  # other paths are neither faulted nor counted
    assert outcomes == ["ok", "fault", "fault", "ok"]
    assert [(r["path"], r["status"]) for r in server.requests if r["path"] == "/api/v3/klines"] == [
        ("/api/v3/klines", 200),
        ("/api/v3/klines", 500),
        ("/api/v3/klines", 500),
        ("/api/v3/klines", 200),
    ]
    assert all(r["status"] == 200 for r in server.requests if r["path"] == "/api/v3/time")


def test_ping_and_unknown_endpoint(server: LocalExchange, ex: ccxt.binance) -> None:
    assert ex.publicGetPing() == {}
    server.requests.clear()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server.base_url}/api/v3/nope", timeout=2)
    assert err.value.code == 404
    assert json.loads(err.value.read())["code"] == -1
    assert server.requests == [{"method": "GET", "path": "/api/v3/nope", "query": {}, "status": 404}]
