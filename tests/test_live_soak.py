"""Soak: 1,000 real cycles (model, review, decision, risk, orders through the live executor) against the local venue,
with seeded random faults on market data, orders, look-ups, fills, balances and a venue restart. At the end the store
equals the venue: one venue order per intent, every venue trade recorded once, positions and cash equal the balances."""
from __future__ import annotations

import random
import time

import pandas as pd
import pytest

from conftest import TINY, candles
from local_exchange import LocalExchange
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import Settings, load_secrets
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.live_execution import reconcile
from morningstar_trader.training import train_model

KEYS = {"MORNINGSTAR_EXCHANGE_API_KEY": "soak-key", "MORNINGSTAR_EXCHANGE_SECRET": "soak-secret"}
CYCLES = int(__import__("os").environ.get("SOAK_CYCLES", 1_000))
FAULTS = [  # (path, kind, method, count)
    ("/api/v3/klines", "500", None, 1),
    ("/api/v3/order", "slow", "POST", 1),          # accepted, the reply comes after the client's timeout
    ("/api/v3/order", "503", "POST", 1),           # never reached the venue
    ("/api/v3/order", "429", "POST", 1),
    ("/api/v3/order", "reject", "POST", 1),
    ("/api/v3/order", "partial", "POST", 1),       # the rest is cancelled once the order times out
    ("/api/v3/order", "split", "POST", 1),
    ("/api/v3/order", "notfound", "GET", 3),
    ("/api/v3/myTrades", "500", None, 1),
    ("/api/v3/account", "503", None, 1),           # reconciliation cannot complete: that cycle sends nothing
    ("/api/v3/openOrders", "429", None, 1),
    ("restart", "", None, 0),
]


def test_a_thousand_live_cycles_with_faults_leave_the_store_equal_to_the_venue(tmp_path):
    rng = random.Random(20261125)
    data = candles(CYCLES + 1_200, end="2024-06-01")
    train = {p: validated_bars(df.iloc[:1_100].reset_index(names="timestamp"), "synthetic", p, "1h")[0] for p, df in data.items()}
    settings = Settings(**{**TINY, "decision": {"min_confidence": 0.34}, "risk": {"max_position_fraction": 0.3, "cooldown_bars": 1}})
    train_model(settings, train, tmp_path / "models" / "default" / "v1", verbose=0)
    index = data["BTC/USDT"].index
    with LocalExchange(data, "1h", now_ms=int(index[1_190].timestamp() * 1000), balances={"USDT": 100_000.0}) as server:
        settings = Settings(**{**settings.model_dump(), "mode": "live", "pairs": ("BTC/USDT", "ETH/USDT"),
                               "exchange": {"api_url": server.base_url, "timeout_ms": 300, "enable_rate_limit": False},
                               "retry": {"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
                               "paths": {"models_dir": tmp_path / "models", "state_dir": tmp_path / "state", "logs_dir": tmp_path / "logs"}})
        ctx = build_context(settings, load_secrets(KEYS), run_id="soak", confirm_live=True)
        ex = ctx.executor
        ex.exchange.options["recvWindow"] = 500                          # short receive window: unknown orders resolve quickly
        ex.grace_s, ex.order_timeout_s = 0.8, 0.5
        faults, refused, started = [], 0, time.time()
        for k in range(1_200 - 1, 1_200 - 1 + CYCLES):
            if rng.random() < 0.15:
                path, kind, method, count = rng.choice(FAULTS)
                faults.append(kind or path)
                if path == "restart": server.stop(); server.start()
                else: server.inject(path, kind, count, method=method, delay_s=0.4)
            now = index[k] + pd.Timedelta(seconds=1)
            server.set_now(int(now.timestamp() * 1000))
            report = run_cycle(ctx, now)
            refused += any(a.kind == "refused" for a in report.snapshot.alerts)
        server._faults.clear()
        deadline = time.time() + 10
        while not (final := reconcile(ex, settings.pairs)).ok and time.time() < deadline:
            time.sleep(0.2)
        elapsed = time.time() - started
    assert final.ok, final.why()
    orders = ctx.store.orders()
    venue = list(server.account.orders.values())
    print(f"{CYCLES} cycles in {elapsed:.0f} s: {len(venue)} venue orders, {len(orders)} intents, {len(faults)} faults, "
          f"{refused} cycles refused, statuses {orders['status'].value_counts().to_dict()}")
    assert len(venue) >= 20 and len(faults) >= 100                      # the soak did trade, through many faults
    assert len({o.client_id for o in venue}) == len(venue)               # one venue order per intent
    assert {o.client_id for o in venue} <= set(orders["client_order_id"])
    assert not orders["status"].isin(["new", "unknown", "submitted", "partially_filled"]).any()
    with ctx.store._tx() as db:
        recorded = sorted(r[0] for r in db.execute("SELECT trade_id FROM fills"))
    assert recorded == sorted(f"{t['symbol'][:-4]}/USDT:{t['id']}" for t in server.account.trades)
    positions = ctx.store.positions()
    for asset in ("BTC", "ETH"):
        held = positions[f"{asset}/USDT"].size if f"{asset}/USDT" in positions else 0.0
        assert server.account.balances.get(asset, 0.0) == pytest.approx(held, abs=1e-9)
    assert server.account.balances["USDT"] == pytest.approx(ctx.store.cash(), abs=1e-6)
