"""The CLI's habits through the installed script: exit 2 for every bad argument (one `morningstar: error:` line),
`risk status` on a fresh project, `data download --days N` and incremental downloads by default."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
from conftest import MORNINGSTAR
from test_cli_data import klines_starts, stored


@pytest.mark.parametrize(
    "args, message",
    [
        (["backtest", "-s", "sma_cross", "--param", "fast=40", "--param", "slow=30"], "fast 40 must be below slow 30"),
        (
            ["backtest", "-s", "sma_cross", "--size", "1", "--param", "fast=40", "--param", "slow=30"],
            "fast 40 must be below slow",
        ),
        (["backtest", "-s", "tsmom", "--param", "lookback=x"], "lookback must be int"),
        (["runs", "show", "nope"], "no run nope under"),
        (["runs", "compare", "a"], "no run a under"),
        (["data", "download", "-p", "BTC/USDT"], "nothing stored yet; say where to start: --days N or --start DATE"),
        (["data", "download", "--days", "3", "--start", "2024-01-01"], "not allowed with argument"),
        (["data", "download", "--days", "0"], "--days"),
        (["data", "show", "--log-level", "LOUD"], "invalid choice: 'LOUD'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(offline_project, args, message):
    proc = offline_project.run(*args, *(["-e", "synthetic"] if args[0] == "backtest" else []), check=2)
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_risk_status_on_a_fresh_project_prints_the_state(offline_project):
    status = json.loads(offline_project.run("risk", "status").stdout)
    assert status["mode"] == "paper" and status["trading"] == "active" and "no paper account yet" in status["why"]


def test_a_reader_that_goes_away_is_no_error(offline_project):
    "`morningstar ... | head`: the pipe closed before the command wrote; no error line, no traceback."
    cmd = [str(MORNINGSTAR), "risk", "status", "--config", str(offline_project.config)]
    proc = subprocess.Popen(cmd, cwd=offline_project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command has imported anything: its first write finds no reader
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1 and err == "", err


def test_download_days_then_incrementally_by_default(project, exchange):
    """`--days 2 --end E` fetches the two days before E; then a plain `data download` starts at the first candle not
    stored (one request), without --start."""
    end = exchange.data["BTC/USDT"].index[-30]
    project.run("data", "download", "-p", "BTC/USDT", "--days", "2", "--end", end.isoformat())
    got = stored(project)
    assert got.index[0] == end - pd.Timedelta(hours=48) and got.index[-1] == end - pd.Timedelta(hours=1)
    exchange.requests.clear()
    out = project.run("data", "download", "-p", "BTC/USDT").stdout
    assert klines_starts(exchange) == [int(end.timestamp() * 1000)]
    assert "+29 new" in out and stored(project).index[-1] == exchange.data["BTC/USDT"].index[-2], out
