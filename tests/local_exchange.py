"""A Binance-compatible spot exchange on 127.0.0.1 for the test suite.

It speaks the subset of Binance's REST API that `ccxt.binance` uses for `load_markets`,
`fetch_ohlcv`, `fetch_ticker` and `fetch_time`, so tests exercise the real client end to end
(URL building, throttling, parsing, error mapping) without internet access. Faults are injected
by request count rather than by chance, so retry and timeout behaviour can be asserted exactly.
"""

from __future__ import annotations

import json
import math
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

from loopback import LoopbackServer, QuietHandler

from morningstar_trader.market_data import point_urls
from morningstar_trader.types import parse_timeframe

__all__ = ["FAULT_KINDS", "LocalExchange"]

DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
FAULT_KINDS = ("429", "418", "500", "503", "slow", "garbage")
_DAY_MS = 86_400_000
_JSON = {"Content-Type": "application/json;charset=UTF-8"}

Candle = tuple[float, float, float, float, float]  # open, high, low, close, volume


def _num(x: float) -> str:
    # Binance sends fixed 8-decimal strings; repr() round-trips a float exactly, so ccxt hands
    # tests back the very floats of the fixture instead of rounded ones.
    return repr(float(x))


def _dec(x: float) -> str:
    return f"{x:.8f}"


class _ApiError(Exception):
    """An error answer in Binance's shape: HTTP status plus a {"code", "msg"} body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class _Fault:
    path: str
    kind: str
    count: int
    after: int
    delay_s: float


@dataclass(frozen=True)
class _Market:
    id: str  # Binance's symbol, "BTCUSDT"
    base: str
    quote: str
    opens: list[int]  # ascending candle open times in ms, bisected to answer time ranges
    candles: list[Candle]


def _build_market(symbol: str, frame: pd.DataFrame) -> _Market:
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise ValueError(f"{symbol}: candles need a tz-aware DatetimeIndex of open times")
    frame = frame.sort_index()
    base, quote = symbol.split("/")
    opens = [int(t) for t in frame.index.tz_convert("UTC").as_unit("ms").asi8]
    values = frame[["open", "high", "low", "close", "volume"]].astype(float).itertuples(index=False)
    return _Market(base + quote, base, quote, opens, [(o, h, lo, c, v) for o, h, lo, c, v in values])


def _filters(price: float) -> list[dict[str, Any]]:
    # Scale tick and step to the price level as Binance's listings do (BTCUSDT near 6e4 trades
    # with tick 0.01 and step 0.00001), staying on Binance's 8-decimal grid.
    magnitude = math.floor(math.log10(price)) if price > 0 else 0
    tick = 10.0 ** max(magnitude - 6, -8)
    step = 10.0 ** min(max(-magnitude - 1, -8), 0)
    return [
        {"filterType": "PRICE_FILTER", "minPrice": _dec(tick), "maxPrice": "1000000.00000000", "tickSize": _dec(tick)},
        {"filterType": "LOT_SIZE", "minQty": _dec(step), "maxQty": "9000.00000000", "stepSize": _dec(step)},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000", "stepSize": "0.00000000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
    ]


class LocalExchange(LoopbackServer):
    """Binance-compatible spot subset on 127.0.0.1 serving fixture candles, with fault injection."""

    def __init__(self, candles: dict[str, pd.DataFrame], timeframe: str = "1h", now_ms: int | None = None) -> None:
        super().__init__()
        self.timeframe = timeframe
        self._tf_ms = int(parse_timeframe(timeframe).total_seconds() * 1000)
        self._markets = {m.id: m for m in (_build_market(s, df) for s, df in candles.items())}
        self._now_ms = now_ms
        self.requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    def inject(self, path: str, kind: str, count: int = 1, *, delay_s: float = 2.0, after: int = 0) -> None:
        """Fault the `count` requests to paths starting with `path` that follow the first `after` ones."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count < 1 or after < 0:
            raise ValueError("inject needs count >= 1 and after >= 0")
        with self._lock:
            self._faults.append(_Fault(path, kind, count, after, delay_s))

    def set_now(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def set_candles(self, candles: dict[str, pd.DataFrame]) -> None:
        """Replace the book while serving (e.g. more candles have closed since the last download)."""
        self._markets = {m.id: m for m in (_build_market(s, df) for s, df in candles.items())}

    def point(self, exchange: Any) -> None:
        """Send every API of a ccxt instance here, keeping each URL's path (as `exchange.api_url` does)."""
        if not self.base_url:
            raise RuntimeError("start() the LocalExchange before pointing clients at it")
        exchange.urls["api"] = point_urls(exchange.urls["api"], self.base_url)

    def _now(self) -> int:
        return self._now_ms if self._now_ms is not None else int(time.time() * 1000)

    # -- request handling ------------------------------------------------------------------------

    def _answer(self, method: str, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes, float]:
        """Status, headers, body and the delay before sending them; logs the request."""
        fault = self._take_fault(path)
        if fault is not None and fault.kind in _FAULT_ANSWERS:
            status, headers, body = _FAULT_ANSWERS[fault.kind]
        else:
            status, payload = self._route(method, path, query)
            headers, body = _JSON, json.dumps(payload).encode()
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query, "status": status})
        return status, headers, body, fault.delay_s if fault is not None and fault.kind == "slow" else 0.0

    def _take_fault(self, path: str) -> _Fault | None:
        # Rules are consulted in injection order; the first one that fires owns the request, so
        # later rules neither fire nor count it.
        with self._lock:
            for fault in self._faults:
                if not path.startswith(fault.path):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        endpoint = _ROUTES.get(path) if method == "GET" else None
        if endpoint is None:
            return 404, {"code": -1, "msg": f"Unknown endpoint {method} {path}"}
        try:
            return 200, endpoint(self, query)
        except _ApiError as e:
            return e.status, {"code": e.code, "msg": e.msg}

    def _market(self, query: dict[str, str]) -> _Market:
        market_id = query.get("symbol")
        if not market_id:
            raise _ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if market_id not in self._markets:
            raise _ApiError(400, -1121, "Invalid symbol.")
        return self._markets[market_id]

    def _last_index(self, market: _Market, now: int) -> int:
        """Index of the candle forming at `now`."""
        visible = bisect_right(market.opens, now)
        if visible == 0:  # Binance doesn't know a symbol before its listing either
            raise _ApiError(400, -1121, "Invalid symbol.")
        return visible - 1

    def _time(self, query: dict[str, str]) -> dict[str, Any]:
        return {"serverTime": self._now()}

    def _exchange_info(self, query: dict[str, str]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self._now(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(m) for m in self._markets.values()],
        }

    def _symbol_info(self, m: _Market) -> dict[str, Any]:
        return {
            "symbol": m.id, "status": "TRADING",
            "baseAsset": m.base, "baseAssetPrecision": 8,
            "quoteAsset": m.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True, "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            # Priced off the last fixture close, not `now`, so filters don't shift under set_now().
            "filters": _filters(m.candles[-1][3] if m.candles else 1.0),
            "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _klines(self, query: dict[str, str]) -> list[list[Any]]:
        market = self._market(query)
        interval = query.get("interval")
        if not interval:
            raise _ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval != self.timeframe:
            raise _ApiError(400, -1120, "Invalid interval.")
        start, end = _int_param(query, "startTime"), _int_param(query, "endTime")
        limit = min(_int_param(query, "limit") or DEFAULT_LIMIT, MAX_LIMIT)  # Binance caps, not rejects
        now = self._now()
        # Candles opening after `now` don't exist yet; the one forming at `now` does.
        stop = bisect_right(market.opens, now if end is None else min(now, end))
        if start is not None:
            first = bisect_left(market.opens, start)
            rows = range(first, min(stop, first + limit))
        else:  # without startTime Binance answers the most recent `limit` candles
            rows = range(max(0, stop - limit), stop)
        return [self._kline(market, i) for i in rows]

    def _kline(self, market: _Market, i: int) -> list[Any]:
        # The forming candle carries its fixture values: there is no intra-candle data to cut it
        # from, and clients must drop it by its closeTime > now anyway.
        o, h, lo, c, v = market.candles[i]
        open_ms = market.opens[i]
        quote_volume = v * c  # synthetic but consistent; nothing downstream needs a real VWAP
        return [open_ms, _num(o), _num(h), _num(lo), _num(c), _num(v), open_ms + self._tf_ms - 1,
                _num(quote_volume), max(1, round(v)), _num(v / 2), _num(quote_volume / 2), "0"]

    # Tickers answer for one symbol only; the all-symbols form isn't needed by the suite.
    def _ticker_price(self, query: dict[str, str]) -> dict[str, str]:
        market = self._market(query)
        return {"symbol": market.id, "price": _num(market.candles[self._last_index(market, self._now())][3])}

    def _ticker_24hr(self, query: dict[str, str]) -> dict[str, Any]:
        market, now = self._market(query), self._now()
        last = self._last_index(market, now)
        # Binance's rolling 24h window; never empty, even when candles are longer than a day.
        window = market.candles[min(bisect_left(market.opens, now - _DAY_MS + 1), last):last + 1]
        volume = sum(r[4] for r in window)
        quote_volume = sum(r[4] * r[3] for r in window)
        first_open, close = window[0][0], window[-1][3]
        return {
            "symbol": market.id,
            "priceChange": _num(close - first_open),
            "priceChangePercent": _num(100 * (close - first_open) / first_open if first_open else 0.0),
            "weightedAvgPrice": _num(quote_volume / volume if volume else close),
            "prevClosePrice": _num(first_open), "lastPrice": _num(close), "lastQty": "0.00000000",
            "bidPrice": _num(close), "bidQty": "1.00000000", "askPrice": _num(close), "askQty": "1.00000000",
            "openPrice": _num(first_open), "highPrice": _num(max(r[1] for r in window)),
            "lowPrice": _num(min(r[2] for r in window)), "volume": _num(volume), "quoteVolume": _num(quote_volume),
            "openTime": now - _DAY_MS, "closeTime": now, "firstId": 0, "lastId": len(window) - 1, "count": len(window),
        }


def _int_param(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


_ROUTES: dict[str, Callable[[LocalExchange, dict[str, str]], Any]] = {
    "/api/v3/ping": lambda exchange, query: {},
    "/api/v3/time": LocalExchange._time,
    "/api/v3/exchangeInfo": LocalExchange._exchange_info,
    "/api/v3/klines": LocalExchange._klines,
    "/api/v3/ticker/price": LocalExchange._ticker_price,
    "/api/v3/ticker/24hr": LocalExchange._ticker_24hr,
}

# Fault answers as Binance (or the CDN in front of it) sends them: rate-limit errors carry
# Binance's JSON error body, server errors are plain text, garbage is a 200 that isn't JSON.
_FAULT_ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "429": (429, {**_JSON, "Retry-After": "1"},
            b'{"code":-1003,"msg":"Too many requests; current limit of IP is 6000 requests per minute. '
            b'Please use the websocket for live updates to avoid polling the API."}'),
    "418": (418, {**_JSON, "Retry-After": "120"},
            b'{"code":-1003,"msg":"Way too many requests; IP banned until 4102444800000. '
            b'Please use the websocket for live updates to avoid bans."}'),
    "500": (500, {"Content-Type": "text/plain"}, b"Internal Server Error"),
    "503": (503, {"Content-Type": "text/plain"}, b"Service Unavailable"),
    "garbage": (200, {"Content-Type": "text/html"}, b"<html><body>upstream glitch</body></html>"),
}


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        self.send(*self.server.owner._answer(self.command, url.path, query))

    do_POST = do_PUT = do_DELETE = do_GET  # answered with Binance's 404 shape, not http.server's 501


LocalExchange.handler = _Handler
