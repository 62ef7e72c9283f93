"""Paper cycles against the local exchange for 1, 10 and 50 pairs: compute and whole cycle (p50/p99), bar close -> last
order.

A pre-warmed `CycleContext` (markets, default-architecture model, state store, candle history and the exchange clock's
offset, as a scheduled run has them when the bar closes) runs `run_cycle` right at each bar close of the local
Binance-compatible server (real ccxt over HTTP on 127.0.0.1). Per cycle: wall time, time in `fetch_ohlcv` (HTTP +
parsing + validation; "compute" is the rest), and the milliseconds from the close to the last pair's order (or decision,
when it holds). For each pair count the peer, in the same process on the same server and model, is a bare loop that only
fetches, computes features and predicts, without review, decision, risk, state or journal. Then one `morningstar run
--mode paper` through papermill against the same server, compared with the in-process cycle.

`--candles stream` (or `rest,stream`) runs the same cycles with `exchange.candles: stream`: the local Binance-compatible
kline websocket of the tests (`tests/local_stream.py`, ccxt.pro as the client) pushes every pair's closed candle as the
cycle starts (the server sends while the cycle waits for them), and REST only fills what the stream missed.

    .venv/bin/python bench/bench_cycle.py [--cycles 100] [--pairs 1,10,50] [--many-cycles 20] [--papermill-runs 2]
                                          [--candles rest,stream] [--models DIR]   # DIR: a model an earlier run trained
        [--runtime onnx|keras]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the local exchange server the tests use

from local_exchange import LocalExchange  # noqa: E402
from local_stream import LocalKlineStream  # noqa: E402

from morningstar_trader.candles import validated_bars  # noqa: E402
from morningstar_trader.config import Settings, load_secrets  # noqa: E402
from morningstar_trader.cycle import build_context, run_cycle, sync_clock  # noqa: E402
from morningstar_trader.runs import run_notebook  # noqa: E402
from morningstar_trader.sample_data import SamplePair, synthetic_candles  # noqa: E402
from morningstar_trader.training import train_model  # noqa: E402

HOUR = pd.Timedelta(hours=1)


class Timed:
    "Wraps the ApiManager and adds up the seconds spent in fetch_ohlcv (and, with a stream, waiting for its candles)."

    def __init__(self, api):
        self.api, self.seconds, self.waited = api, 0.0, 0.0

    def __getattr__(self, name):
        return getattr(self.api, name)

    def fetch_ohlcv(self, *a, **k):
        t = time.perf_counter()
        try:
            return self.api.fetch_ohlcv(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t

    def timing(self, stream):
        "Time `stream.wait` too."
        wait = stream.wait

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return wait(*a, **k)
            finally:
                self.waited += time.perf_counter() - t

        stream.wait = timed


def cycles(ctx, server, closes, ws=None, data=None) -> pd.DataFrame:
    "Cycles at `closes`; with `ws` (the kline websocket) each close's candles are pushed as the cycle starts."
    rows = []
    for close in closes:
        server.set_now(int(close.timestamp() * 1000) + 1)
        sync_clock(ctx)  # as warm_up does before each close (the simulated exchange clock jumps from bar to bar)
        time.sleep(
            ctx.api.exchange.rateLimit / 1000
        )  # warm-up comes schedule.lead_s before the close, not right before it
        ctx.api.seconds = ctx.api.waited = 0.0
        t = time.perf_counter()
        if ws is not None:
            ws.close_bars({p: data[p] for p in ctx.settings.pairs}, close - HOUR, wait=False)
        report = run_cycle(ctx, close)
        total = (time.perf_counter() - t) * 1e3
        assert not (report.pairs["action"] == "skipped").any(), report.pairs
        fetch = (ctx.api.seconds + ctx.api.waited) * 1e3
        rows.append(
            {
                "total_ms": total,
                "fetch_ms": fetch,
                "compute_ms": total - fetch,
                "order_ms_max": report.pairs["ms"].max(),
                "orders": int((report.pairs["order"] != "").sum()),
            }
        )
    return pd.DataFrame(rows)


def bare(ctx, server, closes) -> pd.DataFrame:
    "The peer: fetch, features, one batched prediction; nothing else."
    rows, model, s = [], ctx.model, ctx.settings
    for close in closes:
        server.set_now(int(close.timestamp() * 1000) + 1)
        t = time.perf_counter()
        inputs = []
        for pair in s.pairs:
            bars, _ = ctx.api.fetch_ohlcv(pair, s.timeframe, close - (model.prep.min_bars + 4) * HOUR)
            f = model.prep.transform(bars)
            inputs.append((f.technical[-1], f.context[-1]))
        model.predict({"technical": np.stack([a for a, _ in inputs]), "context": np.stack([b for _, b in inputs])})
        rows.append({"total_ms": (time.perf_counter() - t) * 1e3})
    return pd.DataFrame(rows)


def pct(x, q):
    return float(np.percentile(x, q))


def model_dir(args, work: Path, settings: Settings, data: dict) -> Path:
    "The models folder: `--models` (trained by an earlier run: its weights change nothing about speed), or trained now."
    if args.models:
        shutil.copytree(args.models, work / "models")
        return work / "models"
    first = next(iter(data))
    t = time.perf_counter()
    train_model(
        settings,
        {first: validated_bars(data[first].iloc[:2_500].reset_index(names="timestamp"), "synthetic", first, "1h")[0]},
        work / "models" / "default" / "v1",
        verbose=0,
    )
    print(
        f"trained the default-architecture model in {time.perf_counter() - t:.0f} s (reuse it: --models "
        f"{work / 'models'})"
    )
    return work / "models"


def report(results: dict, peers: dict) -> None:
    print(
        "\nper cycle, pre-warmed context, ms (compute = whole cycle minus fetch_ohlcv and the wait for the stream's "
        "candles; last order = bar close -> the last"
        " pair's order or decision; x 1 pair: compute against 1 pair's with the same candle source)"
    )
    print(
        f"{'candles':>8}{'pairs':>6}{'cycles':>7} | {'whole p50':>9}{'p99':>7} | "
        f"{'compute p50':>11}{'p99':>7}{'x 1 pair':>9} | "
        f"{'candles p50':>11} | {'last order p50':>14}{'p99':>7} | {'peer p50':>8}{'ours/peer':>10}"
    )
    for (source, n), r in results.items():
        one = results[(source, min(k for s, k in results if s == source))]
        print(
            f"{source:>8}{n:>6}{len(r):>7} | {pct(r['total_ms'], 50):>9.1f}{pct(r['total_ms'], 99):>7.1f} | "
            f"{pct(r['compute_ms'], 50):>11.1f}{pct(r['compute_ms'], 99):>7.1f}"
            f"{pct(r['compute_ms'], 50) / pct(one['compute_ms'], 50):>8.1f}x | {pct(r['fetch_ms'], 50):>11.1f} | "
            f"{pct(r['order_ms_max'], 50):>14.1f}{pct(r['order_ms_max'], 99):>7.1f} | "
            f"{pct(peers[n]['total_ms'], 50):>8.1f}"
            f"{pct(r['total_ms'], 50) / pct(peers[n]['total_ms'], 50):>9.2f}x"
        )
    print(
        f"goals: compute for {max(n for _, n in results)} pairs <= 3x 1 pair; close -> last order p50 < 100 ms for 50 "
        "pairs; "
        f"1 pair: close -> order p50 < 50, p99 < 150"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100, help="cycles with 1 pair (the latency sample)")
    parser.add_argument("--pairs", default="1,10,50", help="pair counts, comma-separated")
    parser.add_argument("--many-cycles", type=int, default=20, help="cycles with more than one pair")
    parser.add_argument("--papermill-runs", type=int, default=2)
    parser.add_argument("--models", type=Path, help="a models folder from an earlier run (skips training)")
    parser.add_argument(
        "--candles", default="rest,stream", help="candle sources: rest, stream or both, comma-separated"
    )
    parser.add_argument(
        "--runtime", choices=("onnx", "keras"), default="onnx", help="how the network runs (model.runtime)"
    )
    args = parser.parse_args()
    counts = sorted({int(x) for x in args.pairs.split(",")})
    work = Path(tempfile.mkdtemp(prefix="bench-cycle-"))
    forming = pd.Timestamp.now(tz="UTC").floor("h")
    n = 3_000 + max(args.cycles, args.many_cycles)
    specs = {f"P{i:02d}/USDT": SamplePair(100.0 * (i + 1), 1.0 + 0.02 * i, 1_000.0) for i in range(max(counts))}
    raw, _ = synthetic_candles(specs, start=forming - (n - 1) * HOUR, periods=n, seed=5)
    data = {p: df.set_index("timestamp") for p, df in raw.items()}
    first = next(iter(data))
    settings = Settings(
        training={"epochs": 1, "folds": 1, "train_bars": 1_200, "val_bars": 300, "test_bars": 300},
        llm={"mode": "simulated"},
        decision={"min_confidence": 0.34},
        model={"runtime": args.runtime},
    )
    models = model_dir(args, work, settings, data)

    with LocalExchange(data, "1h") as server, LocalKlineStream("1h") as ws:

        def context(pairs, state, source="rest"):
            s = Settings(
                **{
                    **settings.model_dump(),
                    "mode": "paper",
                    "pairs": pairs,
                    "exchange": {"api_url": server.base_url, "timeout_ms": 5_000, "candles": source, "ws_url": ws.url},
                    "paths": {"models_dir": models, "state_dir": work / state, "logs_dir": work / "logs"},
                }
            )
            ctx = build_context(s, load_secrets({}), run_id="bench")
            ctx.api = Timed(ctx.api)
            return ctx

        closes = list(
            data[first].index[-max(args.cycles, args.many_cycles) - 1 : -1]
        )  # a bar's open is the previous bar's close
        results, peers = {}, {}
        for source in args.candles.split(","):
            for count in counts:
                ctx = context(tuple(data)[:count], f"state-{source}-{count}", source)
                server.set_now(
                    int((closes[0] - HOUR).timestamp() * 1000) + 1
                )  # tf.function tracing, connections, candles
                run_cycle(ctx, closes[0] - HOUR)
                while source == "stream" and not (
                    ctx.stream.connected and ws.subscribed(f"p{count - 1:02d}usdt@kline_1h")
                ):
                    time.sleep(0.01)
                if ctx.stream is not None:
                    ctx.api.timing(ctx.stream)
                some = closes[: args.cycles if count == 1 else args.many_cycles]
                results[(source, count)] = cycles(ctx, server, some, ws if source == "stream" else None, data)
                peers[count] = peers.get(count) if count in peers else bare(ctx, server, some)
                if ctx.stream is not None:
                    ctx.stream.stop()
        report(results, peers)

        if args.papermill_runs:
            server.set_now(None)  # the notebook trades now: the real clock
            config = {
                **settings.model_dump(mode="json"),
                "mode": "paper",
                "pairs": [first],
                "exchange": {"api_url": server.base_url, "timeout_ms": 5_000},
                "paths": {
                    "models_dir": str(models),
                    "state_dir": str(work / "state-pm"),
                    "logs_dir": str(work / "logs"),
                    "runs_dir": str(work / "runs"),
                },
            }
            (work / "config.yaml").write_text(yaml.safe_dump(config))
            durations = []
            os.chdir(work)
            for _ in range(args.papermill_runs):
                record = run_notebook(
                    {"mode": "paper", "config_path": str(work / "config.yaml")},
                    runs_dir=work / "runs",
                    notebook=ROOT / "nbs" / "trading_cycle.ipynb",
                )
                durations.append(record.duration_s)
            cycle_s = pct(results[min(results)]["total_ms"], 50) / 1e3  # 1 pair, the first candle source
            print(
                f"\npapermill: one paper cycle as a run notebook ({args.papermill_runs} runs, runtime {args.runtime}, "
                f"load {os.getloadavg()[0]:.2f}), s"
            )
            print(f"{'run_notebook (kernel, imports, context, cycle, record)':<56}{np.median(durations):>8.2f}")
            print(f"{'in-process run_cycle, pre-warmed':<56}{cycle_s:>8.3f}")
            print(
                f"{'papermill overhead per run':<56}{np.median(durations) - cycle_s:>8.2f}   (hidden by "
                "schedule.lead_s)"
            )
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
