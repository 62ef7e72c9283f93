"""The live soak: real cycles (model, review, decision, risk, orders through the live executor) against the local venue,
with seeded random faults on market data, orders, look-ups, fills, balances and venue restarts.

The venue and the fault schedule live in this process; the trader runs in its own process (`soak_trader.py`), and
midway it is replaced by a new one built from the same state store (as a scheduler's next run is) while the venue
restarts too. Used by tests/test_live_soak.py (1,000 cycles) and bench/bench_soak.py (10,000).

What is counted:
- `refused`: whole cycles that sent nothing, because reconciliation could not complete (a failed look-up) or found a
  disagreement that no order still open explains (the critical `refused` alert);
- `held_pairs`: pair-cycles skipped because that pair had an order still open (of unknown outcome, or not final yet);
- `held_entries`: entries decided but held back while an order still open could have spent cash.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from conftest import TINY, candles
from local_exchange import LocalExchange

from morningstar_trader.candles import validated_bars
from morningstar_trader.config import Settings
from morningstar_trader.execution import PROTECTIVE
from morningstar_trader.portfolio import PortfolioStore
from morningstar_trader.training import train_model

TRADER = Path(__file__).with_name("soak_trader.py")
KEYS = {"MORNINGSTAR_EXCHANGE_API_KEY": "soak-key", "MORNINGSTAR_EXCHANGE_SECRET": "soak-secret"}
SEED = 20261125
FAULTS = [  # (path, kind, method, count)
    ("/api/v3/klines", "500", None, 1),
    ("/api/v3/order", "slow", "POST", 1),  # accepted, the reply comes after the client's timeout
    ("/api/v3/order", "503", "POST", 1),  # never reached the venue
    ("/api/v3/order", "429", "POST", 1),
    ("/api/v3/order", "reject", "POST", 1),
    ("/api/v3/order", "partial", "POST", 1),  # the rest is cancelled once the order times out
    ("/api/v3/order", "split", "POST", 1),
    ("/api/v3/order", "notfound", "GET", 3),
    ("/api/v3/myTrades", "500", None, 1),
    ("/api/v3/account", "503", None, 1),  # reconciliation cannot complete: that cycle sends nothing
    ("/api/v3/openOrders", "429", None, 1),
    ("restart", "", None, 0),
]


@dataclass
class Soak:
    "What a soak did; `differences` between the store and the venue at the end (empty: they agree)."

    cycles: int
    seconds: float
    faults: list[str]
    refused: int
    held_pairs: int
    held_entries: int
    rss: list[tuple[int, int, int]]  # (trader process 1 or 2, cycles done, VmRSS kB)
    final: dict
    differences: list[str]
    venue_orders: int
    intents: int
    cycle_seconds: list[float] = field(default_factory=list)  # each run_cycle in the trader
    statuses: dict = field(default_factory=dict)
    cycle_cpu: list[float] = field(default_factory=list)  # each run_cycle's CPU seconds in the trader
    cycle_usage: list[dict] = field(default_factory=list)  # each run_cycle's system seconds, minor faults, gc seconds
    fault_cycles: list[int] = field(default_factory=list)  # the cycle each fault of `faults` was injected before


class Trader:
    "One trader process: `cycle(now)` and `final()` send a command and return its answer."

    def __init__(self, settings_path: Path, run_id: str, log_path: Path):
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, str(TRADER), str(settings_path), run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log_path, "w"),
            text=True,
            cwd=TRADER.parent,
            env={**os.environ, **KEYS},
        )
        self.ready = self._ask(None)

    def _ask(self, command: dict | None) -> dict:
        if command is not None:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-40:])
            raise RuntimeError(f"the trader process ended (exit {self.proc.returncode}); its log ends:\n{tail}")
        return json.loads(line)

    def cycle(self, now: pd.Timestamp, block: int = 1) -> dict:
        "One live cycle at `now`; `block`: which of the soak's blocks of cycles it belongs to (for a profile)."
        return self._ask({"now": now.isoformat(), "block": block})

    def final(self, seconds: float = 10) -> dict:
        return self._ask({"final": seconds})

    def stop(self) -> None:
        "End the process as a scheduled run ends: after its cycle, with nothing pending on stdin."
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0, f"the trader exited with {self.proc.returncode}: see {self.log_path}"


def open_fds(trader: Trader) -> int:
    "The trader process's open file descriptors (Linux /proc)."
    return len(os.listdir(f"/proc/{trader.proc.pid}/fd"))


def store_bytes(root: Path) -> int:
    "The state store's size on disk: every SQLite file under `root/state`, write-ahead logs included."
    return sum(f.stat().st_size for f in (root / "state").glob("*.sqlite*"))


def differences(store_path: Path, server: LocalExchange) -> list[str]:
    """Where the store and the venue disagree: one venue order per intent, every trade once, positions and cash =
    balances."""
    store = PortfolioStore(store_path)
    orders, venue, balances = store.orders(), list(server.account.orders.values()), server.account.balances
    out = []
    if len({o.client_id for o in venue}) != len(venue):
        out.append("two venue orders share one client id")
    if unknown := {o.client_id for o in venue} - set(orders["client_order_id"]):
        out.append(f"venue orders not in the store: {sorted(unknown)[:3]}")
    resting = {o.client_id for o in venue if o.status in ("NEW", "PARTIALLY_FILLED")}  # a held position's stop
    open_ = orders["status"].isin(["new", "unknown", "submitted", "partially_filled"])
    by_design = orders["intent"].isin(PROTECTIVE) & orders["client_order_id"].isin(resting)
    if len(still := orders[open_ & ~by_design]):
        out.append(f"orders not final: {still['client_order_id'].tolist()[:3]}")
    with store._tx() as db:
        recorded = sorted(r[0] for r in db.execute("SELECT trade_id FROM fills"))
    if recorded != sorted(f"{t['symbol'][:-4]}/USDT:{t['id']}" for t in server.account.trades):
        out.append(f"{len(recorded)} fills recorded, {len(server.account.trades)} venue trades")
    positions = store.positions()
    for asset in ("BTC", "ETH"):
        held = positions[f"{asset}/USDT"].size if f"{asset}/USDT" in positions else 0.0
        if abs(balances.get(asset, 0.0) - held) > 1e-9:
            out.append(f"{asset}: venue {balances.get(asset)}, store {held}")
    if abs(balances["USDT"] - store.cash()) > 1e-6:
        out.append(f"USDT: venue {balances['USDT']}, store {store.cash()}")
    return out


def run_soak(
    root: Path, cycles: int, *, restart_at: int | None = None, rss_every: int = 100, seed: int = SEED, progress=None
) -> Soak:
    "`cycles` live cycles with seeded faults; at cycle `restart_at` a new trader process and a venue restart."
    rng = random.Random(seed)
    data = candles(cycles + 1_200, end="2024-06-01")
    train = {
        p: validated_bars(df.iloc[:1_100].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    settings = Settings(
        **{**TINY, "decision": {"min_confidence": 0.34}, "risk": {"max_position_fraction": 0.3, "cooldown_bars": 1}}
    )
    train_model(settings, train, root / "models" / "default" / "v1", verbose=0)
    index = data["BTC/USDT"].index
    with LocalExchange(data, "1h", now_ms=int(index[1_190].timestamp() * 1000), balances={"USDT": 100_000.0}) as server:
        settings = Settings(
            **{
                **settings.model_dump(),
                "mode": "live",
                "pairs": ("BTC/USDT", "ETH/USDT"),
                "exchange": {"api_url": server.base_url, "timeout_ms": 300, "enable_rate_limit": False},
                "retry": {"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
                "paths": {"models_dir": root / "models", "state_dir": root / "state", "logs_dir": root / "logs"},
            }
        )
        settings_path = root / "settings.json"
        settings_path.write_text(json.dumps(settings.model_dump(mode="json")))
        process = 1
        trader = Trader(settings_path, "soak-1", root / "trader-1.log")
        faults, refused, held_pairs, held_entries, cycle_seconds, cycle_cpu = [], 0, 0, 0, [], []
        cycle_usage, fault_cycles = [], []
        rss = [(1, 0, trader.ready["rss_kb"])]
        started = time.time()
        for n, k in enumerate(range(1_200 - 1, 1_200 - 1 + cycles)):
            if n == restart_at:  # the next scheduled run is a new process; the venue restarts meanwhile
                trader.stop()
                server.stop()
                server.start()
                process += 1
                trader = Trader(settings_path, f"soak-{process}", root / f"trader-{process}.log")
                rss.append((process, n, trader.ready["rss_kb"]))
            if rng.random() < 0.15:
                path, kind, method, count = rng.choice(FAULTS)
                faults.append(kind or path)
                fault_cycles.append(n)
                if path == "restart":
                    server.stop()
                    server.start()
                else:
                    server.inject(path, kind, count, method=method, delay_s=0.4)
            now = index[k] + pd.Timedelta(seconds=1)
            server.set_now(int(now.timestamp() * 1000))
            answer = trader.cycle(now, n // rss_every + 1)
            cycle_seconds.append(answer["s"])
            cycle_cpu.append(answer["cpu_s"])
            cycle_usage.append({k: answer[k] for k in ("sys_s", "minflt", "gc_s")})
            refused += answer["refused"]
            held_pairs += answer["held_pairs"]
            held_entries += answer["held_entries"]
            if (n + 1) % rss_every == 0 or n + 1 == cycles or n + 1 == restart_at:
                rss.append((process, n + 1, answer["rss_kb"]))
                if progress:
                    progress(
                        n + 1, time.time() - started, refused, answer["rss_kb"], open_fds(trader), store_bytes(root)
                    )
        server._faults.clear()
        final = trader.final()
        trader.stop()
        seconds = time.time() - started
        orders = PortfolioStore(root / "state" / "live.sqlite").orders()
        return Soak(
            cycles,
            seconds,
            faults,
            refused,
            held_pairs,
            held_entries,
            rss,
            final,
            differences(root / "state" / "live.sqlite", server),
            len(server.account.orders),
            len(orders),
            cycle_seconds,
            orders["status"].value_counts().to_dict(),
            cycle_cpu,
            cycle_usage,
            fault_cycles,
        )
