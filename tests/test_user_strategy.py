"""A strategy file of your own, end to end through the installed script: written from the template, backtested
through the kernel (decision-sized, look-ahead checked), a run like any other; bad files are one clear line."""

from __future__ import annotations

import json

import pandas as pd


def test_a_strategy_from_the_template_backtests_through_the_kernel(offline_project):
    p = offline_project
    p.run("data", "sample", "--days", "40", "--pairs", "BTC/USDT", "ETH/USDT")
    assert "wrote strategies/my_cross.py" in p.run("new-strategy", "my_cross").stdout
    p.run("new-strategy", "my_cross", check=2)  # never over an existing file
    path = p.root / "strategies" / "my_cross.py"
    path.write_text(path.read_text().replace('"slow": 50', '"slow": 40'))  # edited, as a user would
    args = ["backtest", "--strategy-path", str(path), "-e", "synthetic", "--llm-mode", "off"]
    out = p.run(*args, "--param", "fast=5", "-o", str(p.root / "mine"), "--check-lookahead").stdout
    assert "strategy  rule my_cross (fast 5, slow 40;" in out
    assert "look-ahead check: every decision bar gives the same signal" in out
    trades = pd.read_csv(p.root / "mine" / "trades.csv")
    decisions = pd.read_csv(p.root / "mine" / "decisions.csv")
    assert len(trades) > 5 and set(trades["pair"]) == {"BTC/USDT", "ETH/USDT"} and len(decisions) > 0
    params = json.loads((p.root / "mine" / "parameters.json").read_text())
    assert params["strategy"] == "my_cross" and "my_cross" in p.run("runs", "list").stdout
    for extra, message in (
        (["--param", "speed=3"], "my_cross.py takes fast, slow"),
        (["--param", "fast=45"], "fast 45 must be below slow 40"),
        (["--size", "1"], "--strategy-path trades through the kernel"),
    ):
        assert message in p.run(*args, *extra, check=2).stderr
    (p.root / "broken.py").write_text("NAME = 'broken'\nPARAMS = {}\n1 / 0\n")
    assert "ZeroDivisionError" in p.run(*args[:1], "--strategy-path", "broken.py", check=2).stderr
