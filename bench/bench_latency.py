"""Live latency: bar close -> the last order sent, for 1, 10 and 50 pairs against the local exchange, without reviews
and with live LLM reviews (the local OpenAI-compatible server answering after `--llm-delay` seconds), the reviews of a
close asked in parallel (`llm.max_parallel_reviews`) and, as the peer in the same process, one by one.

Each configuration gets a live `CycleContext` of its own (real ccxt over HTTP on 127.0.0.1, signed orders, the state
store on disk, stops at the venue), pre-warmed by one close, then runs `run_cycle` right at each bar close of the local
exchange. The decision stage is replaced so that every pair without a position enters (and is reviewed) and every
pair with one exits at the next close: only the entry closes are measured; the exit closes between them are not.
"last order" is the report's `ms` of the last pair's order: milliseconds from the start of the cycle (the close) to
the moment its order went out, reviews, risk and the venue's reply included.

    .venv/bin/python bench/bench_latency.py [--pairs 1,10,50] [--closes 6] [--llm-delay 0.2] [--parallel 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the local exchange and LLM servers the tests use

from local_exchange import LocalExchange  # noqa: E402
from local_llm import LocalLLM, Reply  # noqa: E402

from morningstar_trader import kernel  # noqa: E402
from morningstar_trader.candles import validated_bars  # noqa: E402
from morningstar_trader.config import Settings, load_secrets  # noqa: E402
from morningstar_trader.cycle import build_context, run_cycle, sync_clock  # noqa: E402
from morningstar_trader.sample_data import SamplePair, synthetic_candles  # noqa: E402
from morningstar_trader.training import train_model  # noqa: E402
from morningstar_trader.types import Decision  # noqa: E402

HOUR = pd.Timedelta(hours=1)
KEYS = {
    "MORNINGSTAR_EXCHANGE_API_KEY": "bench-key",
    "MORNINGSTAR_EXCHANGE_SECRET": "bench-secret",
    "MORNINGSTAR_LLM_API_KEY": "sk-bench",
}
AGREE = (
    '{"coherence": "agree", "risk_score": 0.2, "veto": false, "direction": "long", "size_multiplier": 0.5, '
    '"stop_loss": null, "take_profit": null, "rationale": "fine"}'
)
TINY = {  # the tests' tiny network: its weights change nothing about latency
    "features": {
        "window": 12,
        "indicators": [
            {"name": "rsi", "params": {"period": 7}},
            {"name": "natr", "params": {"period": 7}},
            {"name": "log_return", "params": {"period": 1}},
        ],
    },
    "model": {"conv_filters": 4, "rnn_units": 4, "dense_units": 8},
    "training": {"train_bars": 800, "val_bars": 200, "test_bars": 300, "folds": 1, "epochs": 1},
}


def enter_or_exit(pair, pred, price, equity, position, **_):
    "Every pair without a position enters (1 % of equity, reviewed), every held one exits."
    if position is None:
        return Decision(pair, "open_long", round(0.01 * equity / price, 4), price * 0.9, price * 1.5, ("bench",))
    return Decision(pair, "close", position.size, reasons=("bench",))


def closes_at(ctx, server, closes) -> list[tuple[float, int]]:
    "Cycles at `closes`; for each entry close, the ms to its last order and the requests the venue saw in it."
    out = []
    for close in closes:
        server.set_now(int(close.timestamp() * 1000) + 1)
        sync_clock(ctx)
        before = len(server.requests)
        report = run_cycle(ctx, close)
        rows = report.pairs
        if (rows["action"] == "open_long").any():
            sent = rows[(rows["action"] == "open_long") & (rows["order"] != "")]
            if len(sent) != len(rows):
                raise SystemExit(f"not every pair entered at {close}:\n{rows}")
            out.append((float(sent["ms"].max()), len(server.requests) - before))
    return out


def pct(x, q) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="1,10,50", help="pair counts, comma-separated")
    parser.add_argument("--closes", type=int, default=6, help="measured entry closes per configuration")
    parser.add_argument("--llm-delay", type=float, default=0.2, help="seconds the local LLM takes per answer")
    parser.add_argument("--parallel", type=int, default=8, help="llm.max_parallel_reviews of the parallel runs")
    args = parser.parse_args()
    counts = sorted({int(x) for x in args.pairs.split(",")})
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    n = 2_000 + 2 * args.closes + 2
    forming = pd.Timestamp.now(tz="UTC").floor("h")
    specs = {f"P{i:02d}/USDT": SamplePair(100.0 * (i + 1), 1.0 + 0.02 * i, 1_000.0) for i in range(max(counts))}
    raw, _ = synthetic_candles(specs, start=forming - (n - 1) * HOUR, periods=n, seed=5)
    data = {p: df.set_index("timestamp") for p, df in raw.items()}
    first = next(iter(data))
    t = time.perf_counter()
    train = {
        first: validated_bars(data[first].iloc[:1_500].reset_index(names="timestamp"), "synthetic", first, "1h")[0]
    }
    train_model(Settings(**TINY), train, work / "models" / "default" / "v1", verbose=0)
    print(f"trained a tiny model in {time.perf_counter() - t:.0f} s")
    kernel.decide = enter_or_exit  # the decision stage: every close sends an order on every pair
    # a bar's open is the previous bar's close; one close to warm up, then entry and exit closes alternate
    closes = list(data[first].index[-(2 * args.closes + 2) - 1 : -1])
    balances = {"USDT": 10_000_000.0}
    results = {}
    with LocalLLM(default=Reply(AGREE, delay_s=args.llm_delay)) as llm:
        for count in counts:
            for name, llm_settings in (
                ("no review", {"mode": "off"}),
                ("reviews, one by one", {"mode": "live", "max_parallel_reviews": 1}),
                (f"reviews, {args.parallel} at once", {"mode": "live", "max_parallel_reviews": args.parallel}),
            ):
                pairs = tuple(data)[:count]
                start_ms = int(closes[0].timestamp() * 1000) + 1
                with LocalExchange({p: data[p] for p in pairs}, "1h", now_ms=start_ms, balances=balances) as server:
                    s = Settings(
                        **TINY,
                        mode="live",
                        pairs=pairs,
                        exchange={"api_url": server.base_url, "timeout_ms": 5_000},
                        risk={"max_open_positions": 100, "max_position_fraction": 0.05, "cooldown_bars": 0},
                        llm={
                            "base_url": llm.base_url,
                            "model": "local-test",
                            "timeout_s": 30,
                            "max_retries": 0,
                            **llm_settings,
                        },
                        paths={
                            "models_dir": work / "models",
                            "state_dir": work / f"state-{count}-{len(results)}",
                            "logs_dir": work / "logs",
                        },
                    )
                    ctx = build_context(
                        s, load_secrets(KEYS), run_id="bench", confirm_live=True, allow_unproven_model=True
                    )
                    closes_at(ctx, server, closes[:1])  # warm: markets, connections, the model's first call
                    results[(count, name)] = closes_at(ctx, server, closes[1:])
                    print(f"{count} pairs, {name}: {len(results[(count, name)])} entry closes", flush=True)
    load = os.getloadavg()
    print(
        f"\nbar close -> last order sent, live against the local exchange, ms ({args.closes} entry closes each; "
        f"the local LLM answers after {args.llm_delay:g} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} CPUs)"
    )
    print(f"{'pairs':>5}  {'':<24}{'p50':>9}{'p99':>9}{'requests':>10}  {'one by one / this (p50)':>24}")
    for count in counts:
        peer = pct([ms for ms, _ in results[(count, "reviews, one by one")]], 50)
        for (c, name), rows in results.items():
            if c == count:
                ms, requests = [m for m, _ in rows], np.median([r for _, r in rows])
                ratio = f"{peer / pct(ms, 50):>23.2f}x" if name.startswith("reviews") else f"{'':>24}"
                print(f"{count:>5}  {name:<24}{pct(ms, 50):>9.1f}{pct(ms, 99):>9.1f}{requests:>10.0f}  {ratio}")
    print("requests: the median count of HTTP requests the local exchange served in one entry close")
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
