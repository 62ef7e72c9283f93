"""Start-up of a process that predicts: `morningstar review` end to end, and a bare process that loads the model and
predicts one window, with the network run by Keras (TensorFlow imported) and by onnxruntime (`model.runtime`).
Each run is a new process, as a scheduled cycle, a sweep worker or a `review` is; the two runtimes alternate so the
machine's load falls on both alike. A tiny model is trained first through the CLI (two sample pairs).

    .venv/bin/python bench/bench_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the CLI project helpers the tests use

from conftest import Project, write_config  # noqa: E402

CONFIG = """features:
  window: 12
  indicators:
    - {name: rsi, params: {period: 7}}
    - {name: natr, params: {period: 7}}
    - {name: log_return, params: {period: 1}}
model: {conv_filters: 4, rnn_units: 4, dense_units: 8, runtime: RUNTIME}
training: {horizon: 6, regime_window: 12, atr_period: 7, train_bars: 600, val_bars: 150, test_bars: 200, folds: 1,
           epochs: 1, batch_size: 128}
paths: {models_dir: models}
decision: {min_confidence: 0.34}
"""

LOAD = """
import sys, time
t = time.perf_counter()
from morningstar_trader.config import load_config
from morningstar_trader.rules import signal_model
from morningstar_trader.store import CandleStore
model = signal_model(load_config(sys.argv[1]))
bars = CandleStore("data").load("synthetic", "ETH/USDT", "1h")
model.predict(model.prep.windows("ETH/USDT", model.prep.frame(bars)).inputs)
print(time.perf_counter() - t, type(model).__name__, "tensorflow" in sys.modules)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    configs = {
        r: write_config(root, extra=CONFIG.replace("RUNTIME", r)).rename(root / f"config-{r}.yaml")
        for r in ("keras", "onnx")
    }
    project = Project(root, configs["onnx"])
    project.run("data", "sample", "--days", "40", "--pairs", "BTC/USDT", "ETH/USDT")
    project.run("train", "--exchange", "synthetic", "--quiet", "--epochs", "1", timeout=600)
    review, load = {r: [] for r in configs}, {r: [] for r in configs}
    notes = {}
    print(f"load average at the start: {os.getloadavg()[0]:.2f} (2 cores shared)", flush=True)
    for _ in range(args.runs):
        for runtime, config in configs.items():
            t = time.perf_counter()
            cmd = ["review", "--pair", "ETH/USDT", "--exchange", "synthetic", "--llm-mode", "simulated"]
            Project(root, config).run(*cmd)
            review[runtime].append(time.perf_counter() - t)
            proc = subprocess.run(
                [sys.executable, "-c", LOAD, str(config)], cwd=root, capture_output=True, text=True, check=True
            )
            seconds, kind, tf = proc.stdout.split()
            load[runtime].append(float(seconds))
            notes[runtime] = f"{kind}, TensorFlow imported: {tf}"
    print(f"load average at the end: {os.getloadavg()[0]:.2f}\n")
    print(f"| process (median of {args.runs}) | keras s | onnx s | keras / onnx |")
    print("|---|---|---|---|")
    for name, d in (("`morningstar review` end to end", review), ("imports + load + predict one pair", load)):
        k, o = np.median(d["keras"]), np.median(d["onnx"])
        print(f"| {name} | {k:.2f} | {o:.2f} | {k / o:.1f}x |")
    print(f"\nkeras: {notes['keras']}; onnx: {notes['onnx']}; work folder {root}")


if __name__ == "__main__":
    main()
