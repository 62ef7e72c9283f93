"""`morningstar backtest` with the rule strategies, end to end on the sample set."""

from __future__ import annotations

import json

import pandas as pd
import pytest


def test_sma_cross_backtest_writes_its_outputs_and_passes_the_lookahead_check(offline_project):
    p = offline_project
    p.run("data", "sample", "--days", "60", "--pairs", "BTC/USDT", "ETH/USDT")
    out = p.run(
        "backtest",
        "--strategy",
        "sma_cross",
        "--param",
        "fast=5",
        "--param",
        "slow=30",
        "--size",
        "0.1",
        "--exchange",
        "synthetic",
        "--out",
        str(p.root / "bt"),
        "--check-lookahead",
    ).stdout
    assert "look-ahead check: every decision bar gives the same signal" in out
    trades = pd.read_csv(p.root / "bt" / "trades.csv")
    stats = json.loads((p.root / "bt" / "stats.json").read_text())
    equity = pd.read_csv(p.root / "bt" / "equity.csv", index_col=0)
    assert stats["trades"] == len(trades) > 10 and set(trades["pair"]) == {"BTC/USDT", "ETH/USDT"}
    assert equity["equity"].iloc[-1] == pytest.approx(10_000 + trades["pnl"].sum(), rel=1e-9)
    assert set(trades["side"]) == {"long"}  # the config's market type is spot: no shorts


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "sma_cross"], "--size is needed for sma_cross"),
        (["--strategy", "sma_cross", "--size", "1", "--param", "fast=ten"], "fast must be int"),
        (["--strategy", "sma_cross", "--size", "1", "--param", "speed=3"], "sma_cross takes fast=<int>, slow=<int>"),
        (["--strategy", "sma_cross", "--size", "1", "--param", "fast=30", "--param", "slow=5"], "fast < slow"),
        (["--strategy", "buy_hold", "--size", "1", "--start", "2030-01-01"], "at least 2 bars are needed"),
        (["--strategy", "model"], "no trained model under"),
    ],
)
def test_backtest_bad_input(offline_project, args, message):
    offline_project.run("data", "sample", "--days", "10", "--pairs", "BTC/USDT", "ETH/USDT")
    proc = offline_project.run("backtest", "--exchange", "synthetic", *args, check=None)
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr
    assert not (offline_project.root / "runs").exists() or not list((offline_project.root / "runs").rglob("trades.csv"))
