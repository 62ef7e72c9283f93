"""Shared fixtures: candles, a local Binance-compatible exchange, configs and the `morningstar` command."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from local_exchange import LocalExchange

from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles

ROOT = Path(__file__).resolve().parents[1]
MORNINGSTAR = Path(sys.executable).with_name("morningstar")
HOUR_MS = 3_600_000
# a model small enough to train in seconds, for cycle tests (unbalanced classes: the tests' tiny models trade as
# they did before balanced became the default; a balanced one trades several times more, the property tests time out)
TINY = dict(
    features={
        "window": 12,
        "indicators": [
            {"name": "rsi", "params": {"period": 7}},
            {"name": "natr", "params": {"period": 7}},
            {"name": "log_return", "params": {"period": 1}},
        ],
    },
    model={"conv_filters": 4, "rnn_units": 4, "dense_units": 8},
    training={
        "horizon": 6,
        "regime_window": 12,
        "atr_period": 7,
        "train_bars": 800,
        "val_bars": 200,
        "test_bars": 300,
        "folds": 1,
        "epochs": 2,
        "batch_size": 128,
        "class_weight": "none",
    },
    decision={"min_confidence": 0.34},
    llm={"mode": "off"},
    risk={"max_position_fraction": 0.3},
)


def candles(n: int, end: str = "2024-06-01", pairs=("BTC/USDT", "ETH/USDT"), seed: int = 3) -> dict[str, pd.DataFrame]:
    """`n` hourly synthetic candles per pair, the last one opening one hour before `end`, indexed by open time."""
    start = pd.Timestamp(end, tz="UTC") - pd.Timedelta(hours=n)
    raw, _ = synthetic_candles({p: SAMPLE_PAIRS[p] for p in pairs}, start=start, periods=n, seed=seed)
    return {p: df.set_index("timestamp") for p, df in raw.items()}


@pytest.fixture
def exchange():
    """A local exchange serving 3,500 hourly candles per pair; its clock stands 30 minutes into the next (forming)
    candle."""
    data = candles(3_501)  # the 3,501st is the candle still forming at the server's `now`
    last_open = int(data["BTC/USDT"].index[-1].timestamp() * 1000)
    with LocalExchange(data, "1h", now_ms=last_open + HOUR_MS // 2) as server:
        server.data = data
        yield server


# TensorFlow's loud start-up path (oneDNN on: absl and oneDNN notices on fd 2) forced in every CLI subprocess, so the
# checks that consoles, run notebooks and refusals carry no start-up noise can fail on any x86 CPU, not only on some.
NOISY_TENSORFLOW = {"TF_ENABLE_ONEDNN_OPTS": "1"}


@dataclass
class Project:
    """A throw-away project folder with a config pointing at the local exchange."""

    root: Path
    config: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def run(
        self, *args: str, env: dict | None = None, check: int | None = 0, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run the installed `morningstar` script with this project's config, as a user would."""
        proc = subprocess.run(
            [str(MORNINGSTAR), *args, "--config", str(self.config)],
            cwd=self.root,
            text=True,
            capture_output=True,
            env={**os.environ, **NOISY_TENSORFLOW, **(env or {})},
            timeout=timeout,
        )
        if check is not None and proc.returncode != check:
            raise AssertionError(
                f"exit {proc.returncode}, expected {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


def write_config(root: Path, api_url: str | None = None, extra: str = "") -> Path:
    config = root / "config.yaml"
    text = (
        "exchange:\n  id: binance\n" + (f"  api_url: {api_url}\n" if api_url else "") + "  timeout_ms: 1500\n"
        "pairs: [BTC/USDT, ETH/USDT]\ntimeframe: 1h\n"
        "retry:\n  max_attempts: 3\n  initial_delay_s: 0.05\n  max_delay_s: 0.2\n" + extra
    )
    config.write_text(text)
    return config


@pytest.fixture
def project(tmp_path, exchange) -> Project:
    return Project(tmp_path, write_config(tmp_path, exchange.base_url))


@pytest.fixture
def offline_project(tmp_path) -> Project:
    """A project whose exchange URL points at a closed port: any request it makes fails."""
    return Project(tmp_path, write_config(tmp_path, "http://127.0.0.1:9"))
