"""A Binance-compatible spot exchange on 127.0.0.1 for the test suite.

It speaks the subset of Binance's REST API that `ccxt.binance` uses for `load_markets`,
`fetch_ohlcv`, `fetch_ticker` and `fetch_time`, and the signed spot endpoints for trading
(`create_order` with a client order id, `fetch_order` by id or client id, `cancel_order`,
`fetch_open_orders`, `fetch_orders`, `fetch_my_trades`, `fetch_balance`), and of the USDT-M futures API
that `ccxt.binanceusdm` uses for `load_markets`, `fetch_funding_rate_history` and
`fetch_open_interest_history` (`set_futures`), so tests exercise the real
client end to end (URL building, signing, throttling, parsing, error mapping) without internet
access. Faults are injected by request count rather than by chance, so retry, timeout and
unknown-outcome behaviour can be asserted exactly.

The account (balances, orders, trades) lives in `LocalExchange.account` and survives `stop()` /
`start()`, which rebinds the same port: a venue restart keeps its book. Market orders fill at the
open of the candle forming at the server's `now` (the first price after the close); limit orders
fill when marketable at that price, else rest until `fill_open` or a cancel. Fees are 0.1 %, in the
quote asset.

Stop orders (`STOP_LOSS_LIMIT`) behave as on Binance spot: a stop price on the wrong side of the market (a sell stop
at or above it, a buy stop at or below it) is refused with -2010; an open stop locks what it would sell (a second
sell of the same coins is -2010 insufficient balance); it triggers when a candle that opened after it was placed
reaches the stop (at that candle's open when it opens through the stop), and then trades as a limit order at its
price: filled at the trigger price when that is at or better than the limit, else resting until the market comes
back. The server checks its stops before each signed request and on `trigger_stops()`.

OCO order lists (`POST /api/v3/orderList/oco`, only when `oco_allowed` is set: the default venue offers none, so its
exchange info says `ocoAllowed: false`) behave as on Binance spot: one leg a `LIMIT_MAKER`, the other a
`STOP_LOSS_LIMIT` (a sell: the limit maker above the market, the stop below it; else -2010 "The relationship of the
prices for the orders is not correct."), each leg an order of its own with its own client id and `orderListId`; the
list locks its quantity once; cancelling either leg cancels the list; when the stop triggers or the limit maker trades
(a candle reaches it after the list was placed), the other leg becomes EXPIRED.
"""

from __future__ import annotations

import json
import math
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
from loopback import LoopbackServer, QuietHandler

from morningstar_trader.market_data import point_urls
from morningstar_trader.types import parse_timeframe

__all__ = ["FAULT_KINDS", "FEE", "Account", "LocalExchange"]

DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
# "slow" answers after the request took effect: on POST /api/v3/order it is accept-then-timeout.
# "notfound": Binance's -2013 for a lookup of an order that exists (lagging lookups).
# "reject": -2010 insufficient balance. "partial": the next order fills 40 % now, the rest rests.
# "split": the next order fills completely, in two trades (60 % and 40 %).
FAULT_KINDS = ("429", "418", "500", "503", "slow", "garbage", "notfound", "reject", "partial", "split")
FEE = 0.001
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
    method: str | None = None


_OPEN = ("NEW", "PARTIALLY_FILLED")


@dataclass
class _Order:
    id: int
    client_id: str
    symbol: str
    side: str
    type: str
    qty: float
    price: float | None
    time: int
    status: str = "NEW"
    executed: float = 0.0
    quote: float = 0.0
    update: int = 0
    stop: float | None = None  # STOP_LOSS_LIMIT: the stop price
    triggered: bool = False  # a stop that was reached: now a limit order at `price`
    list_id: int = -1  # the OCO order list it is a leg of (-1: none)


@dataclass
class Account:
    """Balances, orders and trades of the one account the server knows. Orders and trades are added through `add` and
    `add_trade`, which keep the look-ups Binance answers without reading the history (by client id, by list, a
    symbol's newest, an order's trades, the open orders) indexed: the soak's venue must not slow down as it fills."""

    balances: dict[str, float]
    orders: dict[int, _Order] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    partial_next: int = 0
    split_next: int = 0
    lists: int = 0  # OCO order lists created so far
    _by_client: dict[tuple[str, str], _Order] = field(default_factory=dict)
    _by_symbol: dict[str, list[_Order]] = field(default_factory=dict)
    _legs: dict[int, list[_Order]] = field(default_factory=dict)
    _maybe_open: dict[int, _Order] = field(default_factory=dict)  # every open order, and some no longer open
    _trades_of: dict[tuple[str, int | None], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, order: _Order) -> None:
        self.orders[order.id] = order
        self._by_client[order.symbol, order.client_id] = order  # the newest one wins a lookup
        self._by_symbol.setdefault(order.symbol, []).append(order)
        self._maybe_open[order.id] = order
        if order.list_id != -1:
            self._legs.setdefault(order.list_id, []).append(order)

    def add_trade(self, trade: dict[str, Any]) -> None:
        self.trades.append(trade)
        for key in ((trade["symbol"], None), (trade["symbol"], trade["orderId"])):
            self._trades_of.setdefault(key, []).append(trade)

    def legs(self, list_id: int) -> list[_Order]:
        return list(self._legs.get(list_id, ()))

    def by_client_id(self, symbol: str, client_id: str) -> _Order | None:
        # Binance keeps client ids unique among open orders; the newest one wins a lookup.
        return self._by_client.get((symbol, client_id))

    def newest(self, symbol: str, limit: int) -> list[_Order]:
        return self._by_symbol.get(symbol, [])[-limit:]

    def trades_of(self, symbol: str, order_id: int | None = None) -> list[dict[str, Any]]:
        "The symbol's trades, or one order's, oldest first."
        return self._trades_of.get((symbol, order_id), [])

    def open_orders(self) -> list[_Order]:
        "The orders still open, oldest first (an order never opens again once it ended)."
        for i in [i for i, o in self._maybe_open.items() if o.status not in _OPEN]:
            del self._maybe_open[i]
        return list(self._maybe_open.values())


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
        {
            "filterType": "NOTIONAL",
            "minNotional": "5.00000000",
            "applyMinToMarket": True,
            "maxNotional": "9000000.00000000",
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
    ]


class LocalExchange(LoopbackServer):
    """Binance-compatible spot subset on 127.0.0.1 serving fixture candles, with fault injection."""

    def __init__(
        self,
        candles: dict[str, pd.DataFrame],
        timeframe: str = "1h",
        now_ms: int | None = None,
        balances: dict[str, float] | None = None,
        recv_window_ms: int = 60_000,
    ) -> None:
        super().__init__()
        self.account = Account(dict(balances or {"USDT": 100_000.0}))
        self.recv_window_ms = recv_window_ms  # the longest a signed request may take to arrive, as Binance enforces
        self.timeframe = timeframe
        self._tf_ms = int(parse_timeframe(timeframe).total_seconds() * 1000)
        self._markets = {m.id: m for m in (_build_market(s, df) for s, df in candles.items())}
        self._now_ms = now_ms
        self.requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._funding: dict[str, list[tuple[int, float, float]]] = {}
        self._open_interest: dict[str, list[tuple[int, float, float]]] = {}
        self.oco_allowed = False  # whether OCO order lists are offered (exchange info `ocoAllowed`)

    def inject(
        self, path: str, kind: str, count: int = 1, *, delay_s: float = 2.0, after: int = 0, method: str | None = None
    ) -> None:
        """Fault the `count` requests to paths starting with `path` (and of `method`, if given) that follow the first
        `after` ones."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count < 1 or after < 0:
            raise ValueError("inject needs count >= 1 and after >= 0")
        with self._lock:
            self._faults.append(_Fault(path, kind, count, after, delay_s, method))

    def set_now(self, now_ms: int | None) -> None:
        self._now_ms = now_ms

    def set_candles(self, candles: dict[str, pd.DataFrame]) -> None:
        """Replace the book while serving (e.g. more candles have closed since the last download)."""
        self._markets = {m.id: m for m in (_build_market(s, df) for s, df in candles.items())}

    def set_futures(
        self,
        funding: dict[str, list[tuple[int, float, float]]] | None = None,
        open_interest: dict[str, list[tuple[int, float, float]]] | None = None,
    ) -> None:
        """USDT-M perpetuals by Binance symbol ("BTCUSDT"): funding (fundingTime ms, rate, mark price) and open
        interest (timestamp ms, contracts, value) rows; every symbol named is listed by /fapi/v1/exchangeInfo."""
        self._funding = {k: sorted(v) for k, v in (funding or {}).items()}
        self._open_interest = {k: sorted(v) for k, v in (open_interest or {}).items()}

    def point(self, exchange: Any) -> None:
        """Send every API of a ccxt instance here, keeping each URL's path (as `exchange.api_url` does)."""
        if not self.base_url:
            raise RuntimeError("start() the LocalExchange before pointing clients at it")
        exchange.urls["api"] = point_urls(exchange.urls["api"], self.base_url)

    def _now(self) -> int:
        return self._now_ms if self._now_ms is not None else int(time.time() * 1000)

    # -- request handling ------------------------------------------------------------------------

    def _answer(
        self, method: str, path: str, query: dict[str, str], api_key: str | None = None
    ) -> tuple[int, dict[str, str], bytes, float]:
        """Status, headers, body and the delay before sending them; logs the request."""
        fault = self._take_fault(path, method)
        if fault is not None and fault.kind in _FAULT_ANSWERS:
            status, headers, body = _FAULT_ANSWERS[fault.kind]
        elif fault is not None and fault.kind in ("notfound", "reject"):
            status, headers = 400, _JSON
            body = json.dumps(
                {"code": -2013, "msg": "Order does not exist."}
                if fault.kind == "notfound"
                else {"code": -2010, "msg": "Account has insufficient balance for requested action."}
            ).encode()
        else:
            if fault is not None and fault.kind == "partial":
                self.account.partial_next += 1
            if fault is not None and fault.kind == "split":
                self.account.split_next += 1
            status, payload = self._route(method, path, query, api_key)
            headers, body = _JSON, json.dumps(payload).encode()
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query, "status": status})
        return status, headers, body, fault.delay_s if fault is not None and fault.kind == "slow" else 0.0

    def _take_fault(self, path: str, method: str) -> _Fault | None:
        # Rules are consulted in injection order; the first one that fires owns the request, so
        # later rules neither fire nor count it.
        with self._lock:
            for fault in self._faults:
                if not path.startswith(fault.path) or fault.method not in (None, method):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(self, method: str, path: str, query: dict[str, str], api_key: str | None = None) -> tuple[int, Any]:
        endpoint = _ROUTES.get(path) if method == "GET" else None
        private = _PRIVATE.get((method, path))
        if endpoint is None and private is None:
            return 404, {"code": -1, "msg": f"Unknown endpoint {method} {path}"}
        try:
            if private is None:
                return 200, endpoint(self, query)
            self._authenticate(query, api_key)
            with self._lock:
                self._trigger_stops()
                return 200, private(self, query)
        except _ApiError as e:
            return e.status, {"code": e.code, "msg": e.msg}

    # -- the account ---------------------------------------------------------------------------------

    def _authenticate(self, query: dict[str, str], api_key: str | None) -> None:
        if not api_key:
            raise _ApiError(401, -2014, "API-key format invalid.")
        if "signature" not in query:
            raise _ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        sent = _int_param(query, "timestamp")
        if sent is None or time.time() * 1000 - sent > min(int(query.get("recvWindow", 5000)), self.recv_window_ms):
            raise _ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def price_now(self, symbol: str) -> float:
        """What a market order fills at: the open of the candle forming at `now`."""
        market = self._markets[symbol.replace("/", "")]
        return market.candles[self._last_index(market, self._now())][0]

    def _trade(self, order: _Order, qty: float, price: float, when: int | None = None) -> None:
        m = self._markets[order.symbol]
        sign = 1 if order.side == "BUY" else -1
        fee = qty * price * FEE
        bal = self.account.balances
        bal[m.base] = bal.get(m.base, 0.0) + sign * qty
        bal[m.quote] = bal.get(m.quote, 0.0) - sign * qty * price - fee
        order.executed += qty
        order.quote += qty * price
        order.status = "FILLED" if order.executed >= order.qty * (1 - 1e-12) else "PARTIALLY_FILLED"
        order.update = self._now() if when is None else when
        self._expire_others(order)
        self.account.add_trade(
            {
                "symbol": order.symbol,
                "id": len(self.account.trades) + 1,
                "orderId": order.id,
                "orderListId": -1,
                "price": _num(price),
                "qty": _num(qty),
                "quoteQty": _num(qty * price),
                "commission": _num(fee),
                "commissionAsset": m.quote,
                "time": order.update,
                "isBuyer": order.side == "BUY",
                "isMaker": order.type != "MARKET",
                "isBestMatch": True,
            }
        )

    def _fill(self, order: _Order, limit_qty: float | None = None) -> None:
        """Fill what is marketable of `order` at the current price (all of it, or `limit_qty`)."""
        price = self.price_now(order.symbol)
        if order.type == "LIMIT":
            if (order.side == "BUY" and price > order.price) or (order.side == "SELL" and price < order.price):
                return
            price = order.price
        qty = order.qty - order.executed if limit_qty is None else min(limit_qty, order.qty - order.executed)
        if qty > 0:
            self._trade(order, qty, price)

    def fill_open(self, client_id: str | None = None) -> None:
        """Fill resting orders (all, or the one with `client_id`) at their limit or the market price."""
        with self._lock:
            for o in self.account.open_orders():
                if o.status in _OPEN and client_id in (None, o.client_id):
                    if o.stop is not None and not o.triggered:
                        continue  # a stop waits for its price
                    if o.type != "MARKET":
                        self._trade(o, o.qty - o.executed, o.price)
                    else:
                        self._fill(o)

    def _new_order(self, q: dict[str, str]) -> dict[str, Any]:
        m = self._market(q)
        side, kind = q.get("side", ""), q.get("type", "")
        if side not in ("BUY", "SELL") or kind not in ("MARKET", "LIMIT", "STOP_LOSS_LIMIT"):
            raise _ApiError(
                400, -1102, "Mandatory parameter 'side' or 'type' was not sent, was empty/null, or malformed."
            )
        try:
            qty = float(q["quantity"])
            price = float(q["price"]) if kind != "MARKET" else None
            stop = float(q["stopPrice"]) if kind == "STOP_LOSS_LIMIT" else None
        except (KeyError, ValueError):
            raise _ApiError(
                400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."
            ) from None
        client_id = q.get("newClientOrderId") or f"web_{len(self.account.orders) + 1}"
        dup = self.account.by_client_id(m.id, client_id)
        if dup is not None and dup.status in ("NEW", "PARTIALLY_FILLED"):
            raise _ApiError(400, -2010, "Duplicate order sent.")
        cost = qty * (price or self.price_now(m.id))
        if cost < 5:
            raise _ApiError(400, -1013, "Filter failure: NOTIONAL")
        if stop is not None and (stop >= self.price_now(m.id)) == (side == "SELL"):
            raise _ApiError(400, -2010, "Stop price would trigger immediately.")
        need = (m.quote, cost * (1 + FEE)) if side == "BUY" else (m.base, qty)
        if self.account.balances.get(need[0], 0.0) - self._locked().get(need[0], 0.0) < need[1] - 1e-12:
            raise _ApiError(400, -2010, "Account has insufficient balance for requested action.")
        order = _Order(
            len(self.account.orders) + 1,
            client_id,
            m.id,
            side,
            kind,
            qty,
            price,
            self._now(),
            update=self._now(),
            stop=stop,
        )
        self.account.add(order)
        if stop is not None:
            pass  # a stop rests until its price is reached
        elif self.account.partial_next:
            self.account.partial_next -= 1
            self._fill(order, limit_qty=float(f"{qty * 0.4:.8f}"))
        elif self.account.split_next:
            self.account.split_next -= 1
            self._fill(order, limit_qty=float(f"{qty * 0.6:.8f}"))
            self._fill(order)
        else:
            self._fill(order)
        trades = self.account.trades_of(m.id, order.id)
        return {
            **self._order_json(order),
            "transactTime": order.time,
            "fills": [
                {
                    "price": t["price"],
                    "qty": t["qty"],
                    "commission": t["commission"],
                    "commissionAsset": t["commissionAsset"],
                    "tradeId": t["id"],
                }
                for t in trades
            ],
        }

    def _find(self, q: dict[str, str]) -> _Order:
        m = self._market(q)
        order_id, client_id = _int_param(q, "orderId"), q.get("origClientOrderId")
        order = (
            self.account.orders.get(order_id)
            if order_id is not None
            else (self.account.by_client_id(m.id, client_id) if client_id else None)
        )
        if order is None or order.symbol != m.id:
            raise _ApiError(400, -2013, "Order does not exist.")
        return order

    def _get_order(self, q: dict[str, str]) -> dict[str, Any]:
        return self._order_json(self._find(q))

    def _cancel_order(self, q: dict[str, str]) -> dict[str, Any]:
        order = self._find(q)
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise _ApiError(400, -2011, "Unknown order sent.")
        for o in self.account.legs(order.list_id) if order.list_id != -1 else [order]:
            if o.status in ("NEW", "PARTIALLY_FILLED"):  # cancelling a leg cancels its whole list
                o.status, o.update = "CANCELED", self._now()
        return {**self._order_json(order), "origClientOrderId": order.client_id}

    def _open_orders(self, q: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._market(q).id if q.get("symbol") else None
        return [self._order_json(o) for o in self.account.open_orders() if symbol in (None, o.symbol)]

    def _all_orders(self, q: dict[str, str]) -> list[dict[str, Any]]:
        "The symbol's newest `limit` orders (Binance: 500 unless asked, at most 1,000), oldest first."
        symbol, limit = self._market(q).id, _limit(q)
        return [self._order_json(o) for o in self.account.newest(symbol, limit)]

    def _my_trades(self, q: dict[str, str]) -> list[dict[str, Any]]:
        "The symbol's (or one order's) newest `limit` trades, as `_all_orders` limits orders."
        symbol, order_id, limit = self._market(q).id, _int_param(q, "orderId"), _limit(q)
        return self.account.trades_of(symbol, order_id)[-limit:]

    def _locked(self) -> dict[str, float]:
        "What the open orders lock, by asset: a buy its quote, a sell (a stop included) its base."
        locked: dict[str, float] = {}
        lists: set[int] = set()
        for o in self.account.open_orders():
            if o.list_id != -1 and o.list_id in lists:
                continue  # an order list locks its quantity once
            if o.list_id != -1:
                lists.add(o.list_id)
            m = self._markets[o.symbol]
            left = o.qty - o.executed
            asset, amount = (m.quote, left * (o.price or 0.0)) if o.side == "BUY" else (m.base, left)
            locked[asset] = locked.get(asset, 0.0) + amount
        return locked

    def trigger_stops(self) -> None:
        "Trigger (and fill, where the limit allows) the stops the candles up to `now` reached."
        with self._lock:
            self._trigger_stops()

    def _path(self, market: _Market, since: int) -> list[tuple[int, float, float]]:
        """(time, low, high) of the prices after the candle forming at `since`, up to `now`: each closed candle's open,
        then its range; the forming candle's open only."""
        now, out = self._now(), []
        first, last = bisect_right(market.opens, since), bisect_right(market.opens, now)
        for i in range(first, last):
            o, h, lo, _, _ = market.candles[i]
            out.append((market.opens[i], o, o))
            if market.opens[i] + self._tf_ms <= now:
                out.append((market.opens[i] + self._tf_ms // 2, lo, h))
        return out

    def _trigger_stops(self) -> None:
        for o in self.account.open_orders():
            if o.list_id != -1 and o.stop is None and o.status == "NEW":
                self._walk_limit_maker(o)
        for o in self.account.open_orders():
            if o.stop is None or o.status not in _OPEN:
                continue
            sell = o.side == "SELL"
            for when, lo, hi in self._path(self._markets[o.symbol], o.time):
                if not o.triggered and (lo <= o.stop if sell else hi >= o.stop):
                    o.triggered, o.update = True, when
                    self._expire_others(o)
                    hit = min(hi, o.stop) if sell else max(lo, o.stop)  # through the stop at the open: the open
                    if (hit >= o.price) if sell else (hit <= o.price):
                        self._trade(o, o.qty - o.executed, hit, when)
                        break
                elif o.triggered and when > o.update and ((hi >= o.price) if sell else (lo <= o.price)):
                    self._trade(o, o.qty - o.executed, o.price, when)  # the market came back to the limit
                    break

    def _expire_others(self, order: _Order) -> None:
        "One leg of an OCO list triggered or traded: the others expire."
        if order.list_id == -1:
            return
        for o in self.account.legs(order.list_id):
            if o is not order and o.status == "NEW" and not o.executed:
                o.status, o.update = "EXPIRED", order.update

    def _walk_limit_maker(self, maker: _Order) -> None:
        "The limit-maker leg of a list trades at its price when the market reaches it before the other leg's stop."
        (stop,) = [o for o in self.account.legs(maker.list_id) if o is not maker] or [None]
        sell = maker.side == "SELL"
        for when, lo, hi in self._path(self._markets[maker.symbol], maker.time):
            if stop is not None and stop.status == "NEW" and (lo <= stop.stop if sell else hi >= stop.stop):
                return  # the stop triggers first: the stop check expires this leg
            if (hi >= maker.price) if sell else (lo <= maker.price):
                self._trade(maker, maker.qty - maker.executed, maker.price, when)
                return

    def _new_order_list_oco(self, q: dict[str, str]) -> dict[str, Any]:
        "An OCO list: a LIMIT_MAKER and a STOP_LOSS_LIMIT leg, sharing one quantity (Binance's orderList/oco)."
        m, side = self._market(q), q.get("side", "")
        if not self.oco_allowed:
            raise _ApiError(400, -2010, "OCO orders are not supported for this symbol.")
        sell = side == "SELL"
        want = (
            {"above": "LIMIT_MAKER", "below": "STOP_LOSS_LIMIT"}
            if sell
            else {"above": "STOP_LOSS_LIMIT", "below": "LIMIT_MAKER"}
        )
        if side not in ("BUY", "SELL") or any(q.get(f"{leg}Type") != kind for leg, kind in want.items()):
            raise _ApiError(
                400, -1102, "Mandatory parameter 'aboveType' or 'belowType' was not sent, was empty/null, or malformed."
            )
        stop_leg = "below" if sell else "above"
        maker_leg = "above" if sell else "below"
        try:
            qty = float(q["quantity"])
            maker_price, limit = float(q[f"{maker_leg}Price"]), float(q[f"{stop_leg}Price"])
            stop = float(q[f"{stop_leg}StopPrice"])
        except (KeyError, ValueError):
            raise _ApiError(
                400,
                -1102,
                "Mandatory parameter 'quantity' or a leg's price was not sent, was empty/null, or malformed.",
            ) from None
        last = self.price_now(m.id)
        if not ((maker_price > last > stop) if sell else (maker_price < last < stop)):
            raise _ApiError(400, -2010, "The relationship of the prices for the orders is not correct.")
        ids = {
            leg: q.get(f"{leg}ClientOrderId") or f"web_{len(self.account.orders) + i + 1}"
            for i, leg in enumerate(("below", "above"))
        }
        for cid in ids.values():
            dup = self.account.by_client_id(m.id, cid)
            if dup is not None and dup.status in ("NEW", "PARTIALLY_FILLED"):
                raise _ApiError(400, -2010, "Duplicate order sent.")
        if qty * min(maker_price, limit) < 5:
            raise _ApiError(400, -1013, "Filter failure: NOTIONAL")
        need = (m.base, qty) if sell else (m.quote, qty * max(maker_price, limit) * (1 + FEE))
        if self.account.balances.get(need[0], 0.0) - self._locked().get(need[0], 0.0) < need[1] - 1e-12:
            raise _ApiError(400, -2010, "Account has insufficient balance for requested action.")
        self.account.lists += 1
        list_id, now, legs = self.account.lists, self._now(), []
        for leg in ("below", "above"):  # Binance lists the below leg first
            is_stop = leg == stop_leg
            order = _Order(
                len(self.account.orders) + 1,
                ids[leg],
                m.id,
                side,
                "STOP_LOSS_LIMIT" if is_stop else "LIMIT_MAKER",
                qty,
                limit if is_stop else maker_price,
                now,
                update=now,
                stop=stop if is_stop else None,
                list_id=list_id,
            )
            self.account.add(order)
            legs.append(order)
        return {
            "orderListId": list_id,
            "contingencyType": "OCO",
            "listStatusType": "EXEC_STARTED",
            "listOrderStatus": "EXECUTING",
            "listClientOrderId": q.get("listClientOrderId") or f"list_{list_id}",
            "transactionTime": now,
            "symbol": m.id,
            "orders": [{"symbol": m.id, "orderId": o.id, "clientOrderId": o.client_id} for o in legs],
            "orderReports": [{**self._order_json(o), "transactTime": now} for o in legs],
        }

    def _balances(self, q: dict[str, str]) -> dict[str, Any]:
        locked = self._locked()
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": True,
            "updateTime": self._now(),
            "accountType": "SPOT",
            "balances": [
                {"asset": a, "free": _dec(v - locked.get(a, 0.0)), "locked": _dec(locked.get(a, 0.0))}
                for a, v in sorted(self.account.balances.items())
            ],
            "permissions": ["SPOT"],
            "uid": 1,
        }

    def _order_json(self, o: _Order) -> dict[str, Any]:
        return {
            "symbol": o.symbol,
            "orderId": o.id,
            "orderListId": o.list_id,
            "clientOrderId": o.client_id,
            "price": _dec(o.price or 0.0),
            "origQty": _dec(o.qty),
            "executedQty": repr(o.executed),
            "cummulativeQuoteQty": repr(o.quote),
            "status": o.status,
            "timeInForce": "GTC",
            "type": o.type,
            "side": o.side,
            "stopPrice": _dec(o.stop or 0.0),
            "icebergQty": "0.00000000",
            "time": o.time,
            "updateTime": o.update,
            "isWorking": True,
            "workingTime": o.time,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "NONE",
        }

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
            "symbol": m.id,
            "status": "TRADING",
            "baseAsset": m.base,
            "baseAssetPrecision": 8,
            "quoteAsset": m.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": self.oco_allowed,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            # Priced off the last fixture close, not `now`, so filters don't shift under set_now().
            "filters": _filters(m.candles[-1][3] if m.candles else 1.0),
            "permissions": ["SPOT"],
            "permissionSets": [["SPOT"]],
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
        return [
            open_ms,
            _num(o),
            _num(h),
            _num(lo),
            _num(c),
            _num(v),
            open_ms + self._tf_ms - 1,
            _num(quote_volume),
            max(1, round(v)),
            _num(v / 2),
            _num(quote_volume / 2),
            "0",
        ]

    # Tickers answer for one symbol only; the all-symbols form isn't needed by the suite.
    def _ticker_price(self, query: dict[str, str]) -> dict[str, str]:
        market = self._market(query)
        return {"symbol": market.id, "price": _num(market.candles[self._last_index(market, self._now())][3])}

    def _ticker_24hr(self, query: dict[str, str]) -> dict[str, Any]:
        market, now = self._market(query), self._now()
        last = self._last_index(market, now)
        # Binance's rolling 24h window; never empty, even when candles are longer than a day.
        window = market.candles[min(bisect_left(market.opens, now - _DAY_MS + 1), last) : last + 1]
        volume = sum(r[4] for r in window)
        quote_volume = sum(r[4] * r[3] for r in window)
        first_open, close = window[0][0], window[-1][3]
        return {
            "symbol": market.id,
            "priceChange": _num(close - first_open),
            "priceChangePercent": _num(100 * (close - first_open) / first_open if first_open else 0.0),
            "weightedAvgPrice": _num(quote_volume / volume if volume else close),
            "prevClosePrice": _num(first_open),
            "lastPrice": _num(close),
            "lastQty": "0.00000000",
            "bidPrice": _num(close),
            "bidQty": "1.00000000",
            "askPrice": _num(close),
            "askQty": "1.00000000",
            "openPrice": _num(first_open),
            "highPrice": _num(max(r[1] for r in window)),
            "lowPrice": _num(min(r[2] for r in window)),
            "volume": _num(volume),
            "quoteVolume": _num(quote_volume),
            "openTime": now - _DAY_MS,
            "closeTime": now,
            "firstId": 0,
            "lastId": len(window) - 1,
            "count": len(window),
        }

    # -- USDT-M futures (the shapes of https://developers.binance.com/docs/derivatives/usds-margined-futures) ---------

    def _fapi_symbols(self) -> list[str]:
        return sorted(set(self._funding) | set(self._open_interest))

    def _fapi_exchange_info(self, query: dict[str, str]) -> dict[str, Any]:
        symbols = []
        for sym in self._fapi_symbols():
            base = sym.removesuffix("USDT")
            symbols.append(
                {
                    "symbol": sym,
                    "pair": sym,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": base,
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": ["PoW"],
                    "settlePlan": 0,
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764", "tickSize": "0.10"},
                        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
                        {"filterType": "MIN_NOTIONAL", "notional": "100"},
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                    "permissionSets": ["GRID", "COPY"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self._now(),
            "futuresType": "U_MARGINED",
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols,
        }

    def _futures_rows(
        self, table: dict, query: dict[str, str], default: int, cap: int
    ) -> list[tuple[int, float, float]]:
        sym = query.get("symbol")
        if sym not in table:
            raise _ApiError(400, -1121, "Invalid symbol.")
        rows, now = [r for r in table[sym] if r[0] <= self._now()], self._now()
        start, end = _int_param(query, "startTime"), _int_param(query, "endTime")
        limit = min(_int_param(query, "limit") or default, cap)
        rows = [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] <= end) and r[0] <= now]
        return rows[:limit] if start is not None else rows[-limit:]  # without startTime: the most recent

    def _funding_rate(self, query: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {"symbol": query["symbol"], "fundingTime": t, "fundingRate": f"{r:.8f}", "markPrice": f"{m:.8f}"}
            for t, r, m in self._futures_rows(self._funding, query, 100, 1000)
        ]

    def _open_interest_hist(self, query: dict[str, str]) -> list[dict[str, Any]]:
        if query.get("period") not in ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"):
            raise _ApiError(400, -1130, "Invalid period.")
        return [
            {
                "symbol": query["symbol"],
                "sumOpenInterest": f"{a:.8f}",
                "sumOpenInterestValue": f"{v:.8f}",
                "CMCCirculatingSupply": "0",
                "timestamp": t,
            }
            for t, a, v in self._futures_rows(self._open_interest, query, 30, 500)
        ]


def _int_param(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def _limit(query: dict[str, str]) -> int:
    "A list endpoint's `limit`: 500 unless given, 1 to 1,000 (Binance's allOrders and myTrades)."
    limit = _int_param(query, "limit")
    if limit is None:
        return 500
    if not 1 <= limit <= 1_000:
        raise _ApiError(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1 - 1000'.")
    return limit


_PRIVATE: dict[tuple[str, str], Callable[[LocalExchange, dict[str, str]], Any]] = {
    ("POST", "/api/v3/order"): LocalExchange._new_order,
    ("POST", "/api/v3/orderList/oco"): LocalExchange._new_order_list_oco,
    ("GET", "/api/v3/order"): LocalExchange._get_order,
    ("DELETE", "/api/v3/order"): LocalExchange._cancel_order,
    ("GET", "/api/v3/openOrders"): LocalExchange._open_orders,
    ("GET", "/api/v3/allOrders"): LocalExchange._all_orders,
    ("GET", "/api/v3/myTrades"): LocalExchange._my_trades,
    ("GET", "/api/v3/account"): LocalExchange._balances,
}

_ROUTES: dict[str, Callable[[LocalExchange, dict[str, str]], Any]] = {
    "/api/v3/ping": lambda exchange, query: {},
    "/api/v3/time": LocalExchange._time,
    "/api/v3/exchangeInfo": LocalExchange._exchange_info,
    "/api/v3/klines": LocalExchange._klines,
    "/api/v3/ticker/price": LocalExchange._ticker_price,
    "/api/v3/ticker/24hr": LocalExchange._ticker_24hr,
    "/fapi/v1/exchangeInfo": LocalExchange._fapi_exchange_info,
    "/fapi/v1/fundingRate": LocalExchange._funding_rate,
    "/futures/data/openInterestHist": LocalExchange._open_interest_hist,
}

# Fault answers as Binance (or the CDN in front of it) sends them: rate-limit errors carry
# Binance's JSON error body, server errors are plain text, garbage is a 200 that isn't JSON.
_FAULT_ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "429": (
        429,
        {**_JSON, "Retry-After": "1"},
        b'{"code":-1003,"msg":"Too many requests; current limit of IP is 6000 requests per minute. '
        b'Please use the websocket for live updates to avoid polling the API."}',
    ),
    "418": (
        418,
        {**_JSON, "Retry-After": "120"},
        b'{"code":-1003,"msg":"Way too many requests; IP banned until 4102444800000. '
        b'Please use the websocket for live updates to avoid bans."}',
    ),
    "500": (500, {"Content-Type": "text/plain"}, b"Internal Server Error"),
    "503": (503, {"Content-Type": "text/plain"}, b"Service Unavailable"),
    "garbage": (200, {"Content-Type": "text/html"}, b"<html><body>upstream glitch</body></html>"),
}


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:  # signed POSTs carry their parameters form-encoded in the body
            query |= dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        self.send(*self.server.owner._answer(self.command, url.path, query, self.headers.get("X-MBX-APIKEY")))

    do_POST = do_PUT = do_DELETE = do_GET  # unknown ones answered with Binance's 404 shape, not http.server's 501


LocalExchange.handler = _Handler
