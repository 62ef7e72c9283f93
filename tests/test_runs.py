"""The cycle notebook through papermill with a real kernel: the run notebook, its scraps, the index, failures,
secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from morningstar_trader.backtest import SmaCross, run_rule_backtest
from morningstar_trader.runs import RunError, list_runs, load_run, run_notebook
from morningstar_trader.store import CandleStore

NOTEBOOK = str(ROOT / "nbs" / "trading_cycle.ipynb")
FAKE = {
    "MORNINGSTAR_EXCHANGE_API_KEY": "FAKE-RUN-KEY-11aa",
    "MORNINGSTAR_EXCHANGE_SECRET": "FAKE-RUN-SECRET-22bb",
    "MORNINGSTAR_LLM_API_KEY": "sk-FAKE-RUN-33cc",
}


@pytest.fixture
def sampled(offline_project):
    offline_project.run("data", "sample", "--days", "40", "--pairs", "BTC/USDT", "ETH/USDT")
    return offline_project


def test_a_backtest_run_is_recorded_and_reads_back(sampled):
    p = sampled
    out = p.run(
        "run",
        "--mode",
        "backtest",
        "--strategy",
        "sma_cross",
        "--size",
        "0.1",
        "--exchange",
        "synthetic",
        "--notebook",
        NOTEBOOK,
        "--html",
        env=FAKE,
    ).stdout
    run_id = out.split()[1].rstrip(":")
    (row,) = list_runs(p.root / "runs").to_dict("records")
    assert row["run_id"] == run_id and row["status"] == "ok" and row["mode"] == "backtest"
    scraps = load_run(run_id, p.root / "runs")
    assert set(scraps) == {
        "parameters",
        "stats",
        "trades",
        "decisions",
        "orders",
        "fills",
        "predictions",
        "reviews",
        "equity",
        "benchmarks",
        "errors",
        "tearsheet",
    }
    sheet = Path(scraps["tearsheet"]).read_text()  # the run's tearsheet, linked from its notebook
    assert scraps["tearsheet"] == str(p.root / "runs" / "tearsheets" / f"{run_id}.html") and "monthly returns" in sheet
    assert list(scraps["benchmarks"].columns) == ["buy_hold", "vol_target", "tsmom", "flat", "buy_hold_scaled"]
    assert {"excess_return_vs_buy_hold", "vol_target_sharpe", "tsmom_return", "tsmom_chosen_on"} <= set(scraps["stats"])
    # the notebook ran the same engine: same trades as an in-process run on the same candles
    frames = {
        pair: CandleStore(p.root / "data").load("synthetic", pair, "1h").frame for pair in ("BTC/USDT", "ETH/USDT")
    }
    # the rule's windows (10, 50): one sma_cross on either path
    expected = run_rule_backtest(
        frames, SmaCross(10, 50), size=0.1, fee=0.001, slippage_bps=2.0, allow_short=False
    ).trades
    pd.testing.assert_frame_equal(scraps["trades"].reset_index(drop=True), expected, check_dtype=False)
    assert scraps["stats"]["trades"] == len(expected) and scraps["parameters"]["strategy"] == "sma_cross"
    assert list((p.root / "runs").rglob("*.html"))
    # no secret anywhere: run notebook, html copy, index, logs
    for path in p.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(v.encode() in data for v in FAKE.values()), path
    shown = json.loads(p.run("runs", "show", run_id, "--json").stdout)
    assert shown["trades"] == len(expected)


def test_a_rule_without_size_runs_decision_sized_and_compare_shows_the_baselines(sampled):
    """`run --mode backtest --strategy tsmom` (no --size): the rule through the kernel, the baselines on the same bars
    (the same numbers in any run over them); `runs compare` lists them."""
    p, ids = sampled, []
    for strategy in ("tsmom", "buy_hold"):
        out = p.run(
            "run",
            "--mode",
            "backtest",
            "--strategy",
            strategy,
            "--exchange",
            "synthetic",
            "--start",
            "2023-01-20",
            "--llm-mode",
            "off",
            "--notebook",
            NOTEBOOK,
            env=FAKE,
        ).stdout
        ids.append(out.split()[1].rstrip(":"))
    tsmom, hold = (load_run(rid, p.root / "runs") for rid in ids)
    # a month of hourly bars before its first decision; then every decision is the rule's, shorts refused on spot
    assert len(tsmom["decisions"]) > 0 and set(tsmom["trades"]["side"]) <= {"long"}
    assert tsmom["parameters"]["strategy"] == "tsmom" and tsmom["decisions"]["time"].min() >= pd.Timestamp(
        "2023-01-20", tz="UTC"
    )
    assert tsmom["equity"].index[0] == pd.Timestamp("2023-01-20", tz="UTC")  # history before --start is not traded
    # 19 days of history before --start: too few to choose TSMOM's lookback, and the run says so
    assert tsmom["stats"]["tsmom_chosen_on"] == "default: 456 bars before the start, 1,440 needed to choose"
    for key in ("buy_hold_return", "vol_target_return", "vol_target_sharpe", "tsmom_return"):
        assert tsmom["stats"][key] == pytest.approx(hold["stats"][key]), key
    compared = p.run("runs", "compare", *ids).stdout
    assert all(k in compared for k in ("vol_target_return", "tsmom_sharpe", "information_ratio_vs_vol_target"))


def test_a_failed_run_keeps_its_notebook_and_status(sampled):
    proc = sampled.run(
        "run",
        "--mode",
        "backtest",
        "--strategy",
        "buy_hold",
        "--size",
        "1",
        "--exchange",
        "nowhere",
        "--notebook",
        NOTEBOOK,
        check=1,
    )
    assert "failed" in proc.stderr and "no candles stored for nowhere" in proc.stderr
    (row,) = list_runs(sampled.root / "runs").to_dict("records")
    assert row["status"] == "failed" and "no candles stored" in row["error"]
    assert pd.io.common.file_exists(row["path"])  # the failed run's notebook, with its error


def test_bad_run_requests(sampled):
    with pytest.raises(RunError, match=r"unknown parameter\(s\) \['colour'\]"):
        run_notebook({"mode": "backtest", "colour": "red"}, runs_dir=sampled.root / "runs", notebook=NOTEBOOK)
    with pytest.raises(RunError, match="look like secrets"):
        run_notebook({"mode": "backtest", "api_key": "x"}, runs_dir=sampled.root / "runs", notebook=NOTEBOOK)
    proc = sampled.run("run", "--mode", "live", "--notebook", NOTEBOOK, check=2)
    assert "--i-understand-this-trades-real-money" in proc.stderr
    assert not (sampled.root / "runs").exists() or list_runs(sampled.root / "runs").empty
