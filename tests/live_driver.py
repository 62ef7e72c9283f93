"""One live order intent in its own process, as a live cycle sends it: start-up reconciliation, then place and settle.

The crash tests run it with MORNINGSTAR_FAILPOINT set (the process SIGKILLs itself there) or kill it from outside,
then run it again with the same intent and check the venue against the store.

    python live_driver.py URL STORE CLIENT_ID PAIR SIDE AMOUNT [LIMIT_PRICE]
"""

from __future__ import annotations

import json
import sys
import time

from morningstar_trader.config import ExchangeSettings, load_secrets
from morningstar_trader.live_execution import LiveExecutor, reconcile
from morningstar_trader.market_data import make_exchange
from morningstar_trader.portfolio import PortfolioStore
from morningstar_trader.types import Order


def main(url: str, store_path: str, cid: str, pair: str, side: str, amount: str, price: str | None = None) -> int:
    exchange = make_exchange(ExchangeSettings(api_url=url, timeout_ms=3000), load_secrets())
    exchange.options["recvWindow"] = 1000
    exchange.load_markets()
    store = PortfolioStore(store_path, initial_cash=float(exchange.fetch_balance()["total"]["USDT"]))
    executor = LiveExecutor(exchange, store, clock_skew_s=0.5, order_timeout_s=0.3)
    pairs = ("BTC/USDT", "ETH/USDT")
    deadline = time.time() + 10
    while not (result := reconcile(executor, pairs, keep_unsent=frozenset({cid}))).ok and time.time() < deadline:
        time.sleep(0.3)  # an order of unknown outcome resolves once the venue's receive window has passed
    if not result.ok:
        print(json.dumps({"refused": result.why()}))
        return 3
    order = Order(cid, pair, side, float(amount), "limit" if price else "market", float(price) if price else None)
    status = executor.place(order)
    if status not in ("filled", "rejected", "cancelled"):
        status = executor.settle(cid)
    print(json.dumps({"status": status}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
