"""`morningstar sweep` and `run_sweep` on a real Dask cluster: a `dask scheduler` and `dask worker` processes on
127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from conftest import Project, write_config

from morningstar_trader.backtest import load_frames
from morningstar_trader.config import load_config
from morningstar_trader.store import CandleStore
from morningstar_trader.sweep import backtest_once, fold_data, make_strategy, run_sweep, with_overrides

DASK = Path(sys.executable).with_name("dask")
# tests that start a cluster run one after the other: two clusters at once would only fight for the same 2 cores
cluster_group = pytest.mark.xdist_group("dask-cluster")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dask_cluster(tmp_path: Path, workers: int = 2):
    """A `dask scheduler` and `workers` single-threaded `dask worker` processes (no nanny: a killed one stays dead)."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = [open(tmp_path / f"dask-{i}.log", "w") for i in range(workers + 1)]
    procs = [
        subprocess.Popen(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        for i in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        str(DASK),
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--name",
                        f"w{i}",
                    ],
                    stdout=logs[i + 1],
                    stderr=subprocess.STDOUT,
                )
            )
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(workers, timeout=60)
        yield address, procs[1:]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("dask")) as c:
        yield c


def _one_by_one(p, table: pd.DataFrame, size: float, folds: int) -> None:
    """Every ok row of a sweep equals `backtest_once` of its point on its fold's candles (the sweep's own call)."""
    cfg = load_config(p.config)
    frames = load_frames(CandleStore(p.data_dir), "synthetic", cfg.pairs, cfg.timeframe)
    data = fold_data(frames, folds)
    for row in table[table["status"] == "ok"].to_dict("records"):
        s = with_overrides(cfg, {k: row[k] for k in ("costs.taker_fee",) if k in row})
        one = backtest_once(
            data[row["fold"]]["frames"],
            make_strategy("sma_cross", {"fast": row["fast"], "slow": row["slow"]}, s),
            s,
            size=size,
            cash=10_000.0,
        )
        for key, value in one.stats.items():
            assert row[key] == value or (pd.isna(row[key]) and pd.isna(value)), (key, row, value)


@cluster_group
def test_sweep_on_a_real_cluster_equals_the_backtests_one_by_one_and_resumes(offline_project, cluster):
    p, (address, _) = offline_project, cluster
    p.run("data", "sample", "--days", "60", "--pairs", "BTC/USDT", "ETH/USDT")
    args = [
        "sweep",
        "--strategy",
        "sma_cross",
        "--grid",
        "fast=5,10,40",
        "--grid",
        "slow=30,50",
        "--grid",
        "costs.taker_fee=0,0.002",
        "--size",
        "0.1",
        "--folds",
        "2",
        "--exchange",
        "synthetic",
        "--out",
        str(p.root / "sw"),
        "--scheduler",
        address,
        "--no-report",
    ]
    proc = p.run(*args, check=1)  # fast=40 with slow=30 cannot be: those tasks fail, the others finish
    assert "24 results (24 run now, 0 already done), 4 failed" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("morningstar: error: 4 of 24 sweep tasks failed")
    assert "sma_cross needs 1 <= fast < slow, got fast=40, slow=30" in proc.stderr
    table = pd.read_parquet(p.root / "sw" / "results.parquet")
    assert len(table) == 24 and table["task"].is_unique and sorted(table["point"].unique()) == list(range(12))
    failed = table[table["status"] == "failed"]
    assert (
        (failed["fast"] == 40).all()
        and (failed["slow"] == 30).all()
        and failed["error"].str.contains("Traceback").all()
    )
    assert (table.loc[table["status"] == "ok", "trades"] > 0).all()
    assert table["worker"].nunique() == 2  # both worker processes ran tasks
    _one_by_one(p, table, 0.1, 2)
    # the same run through `morningstar backtest` (one fold = the whole range): the statistics it writes
    p.run(
        "backtest",
        "--strategy",
        "sma_cross",
        "--param",
        "fast=10",
        "--param",
        "slow=50",
        "--size",
        "0.1",
        "--exchange",
        "synthetic",
        "--out",
        str(p.root / "bt"),
    )
    stats = json.loads((p.root / "bt" / "stats.json").read_text())
    one = p.run(
        "sweep",
        "--strategy",
        "sma_cross",
        "--grid",
        "fast=10",
        "--grid",
        "slow=50",
        "--size",
        "0.1",
        "--exchange",
        "synthetic",
        "--out",
        str(p.root / "sw1"),
        "--scheduler",
        address,
        "--no-report",
    )
    assert "1 results (1 run now" in one.stdout
    row = pd.read_parquet(p.root / "sw1" / "results.parquet").iloc[0]
    assert {k: row[k] for k in stats} == pytest.approx(stats, nan_ok=True)
    # resumed: only the failed tasks run again
    again = p.run(*args, check=1)
    assert "24 results (4 run now, 20 already done), 4 failed" in again.stdout
    timing = ["duration_s", "cpu_s", "worker"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(p.root / "sw" / "results.parquet").drop(columns=timing), table.drop(columns=timing)
    )


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> Project:
    """A project with five days of sample candles, shared by the tests that must fail before touching anything."""
    root = tmp_path_factory.mktemp("sampled")
    p = Project(root, write_config(root, "http://127.0.0.1:9"))
    p.run("data", "sample", "--days", "5", "--pairs", "BTC/USDT", "ETH/USDT")
    return p


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "fastt=5", "--size", "1"], "--grid fastt: sma_cross takes fast, slow"),
        (["--grid", "fast=5,", "--size", "1"], "expected KEY=V1,V2,..."),
        (["--grid", "fast=five", "--size", "1"], "fast must be int, got 'five'"),
        (["--grid", "risk.risk_per_trade=0.02", "--size", "1"], "fixed-size sma_cross backtest does not read it"),
        (["--grid", "costs.taker_fee=0.5", "--size", "1"], "costs.taker_fee"),
        (["--grid", "fast=5"], "--size is needed for sma_cross"),
        (["--grid", "fast=5", "--size", "1", "--random", "0"], "--random 0: need at least 1"),
        (["--grid", "fast=5", "--size", "1", "--folds", "0"], "--folds 0"),
        (["--grid", "fast=5", "--size", "1", "--scheduler", "http://127.0.0.1:1"], "must be a Dask scheduler address"),
        (
            ["--grid", "fast=5", "--size", "1", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
            "--workers sizes the local cluster",
        ),
        (["--grid", "training.horizon=6"], "--size is needed for sma_cross"),
        (
            ["--strategy", "model", "--grid", "min_confidence=0.4", "--size", "1"],
            "a sweep of the model runs through the decision stage",
        ),
        (["--strategy-path", "none.py", "--grid", "fast=5"], "none.py: no such file"),
    ],
)
def test_sweep_bad_input_exits_2_with_one_line(sampled, args, message):
    proc = sampled.run("sweep", "--strategy", "sma_cross", "--exchange", "synthetic", "--no-report", *args, check=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("morningstar: error: ") and message in lines[0], proc.stderr
    assert not list(sampled.root.rglob("results.parquet")) and not list(sampled.root.rglob("tasks"))


def test_an_unreachable_scheduler_is_one_error_line(sampled):
    proc = sampled.run(
        "sweep",
        "--strategy",
        "sma_cross",
        "--grid",
        "fast=5",
        "--size",
        "1",
        "--exchange",
        "synthetic",
        "--scheduler",
        f"tcp://127.0.0.1:{_free_port()}",
        "--no-report",
        check=1,
        timeout=60,
    )
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("morningstar: error: cannot reach the Dask scheduler at tcp://127.0.0.1:")
    )


@pytest.mark.slow
@cluster_group
def test_a_worker_killed_mid_sweep_leaves_every_result_exactly_once(offline_project, tmp_path):
    p = offline_project
    p.run("data", "sample", "--days", "365", "--pairs", "BTC/USDT", "ETH/USDT")
    cfg = load_config(p.config)
    frames = load_frames(CandleStore(p.data_dir), "synthetic", cfg.pairs, cfg.timeframe)
    grid = {"fast": [3, 5, 8, 12, 16, 20, 25, 30], "slow": [40, 60, 90, 120, 150]}
    with dask_cluster(tmp_path) as (address, workers):
        out, box = tmp_path / "sw", {}
        runner = threading.Thread(
            target=lambda: box.update(
                res=run_sweep(
                    frames, "sma_cross", grid, settings=cfg, out=out, size=0.1, scheduler=address, progress=False
                )
            )
        )
        runner.start()
        deadline = time.monotonic() + 120
        while len(list((out / "tasks").glob("*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        done_at_kill = len(list((out / "tasks").glob("*.json")))
        os.kill(workers[0].pid, signal.SIGKILL)
        runner.join(240)
        assert workers[0].wait(10) == -signal.SIGKILL and workers[1].poll() is None
    assert 3 <= done_at_kill < 40, done_at_kill  # the kill came mid-sweep
    table = box["res"].table
    assert len(table) == 40 and table["task"].is_unique and (table["status"] == "ok").all()
    assert sorted(zip(table["fast"], table["slow"])) == sorted((f, s) for f in grid["fast"] for s in grid["slow"])
    assert len(list((out / "tasks").glob("*.json"))) == 40
    killed = f"{socket.gethostname()}:{workers[0].pid}"
    assert (table["worker"] != killed).sum() > 40 - done_at_kill - 1  # the survivor took over what was left
    _one_by_one(p, table.sample(5, random_state=1), 0.1, 1)


@pytest.mark.slow
@cluster_group
def test_a_decision_sweep_on_cached_predictions_equals_the_model_backtests(cluster, tmp_path):
    """Decision and risk settings swept over a tiny trained model: the workers get its predictions, computed once
    (they never load TensorFlow), and each row equals `configured_backtest` with the model itself."""
    from test_model_backtest import TINY

    from morningstar_trader.backtest import ModelStrategy
    from morningstar_trader.candles import validated_bars
    from morningstar_trader.config import Settings
    from morningstar_trader.model import MorningstarModel
    from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles
    from morningstar_trader.training import train_model

    settings = Settings(
        **{**TINY, "llm": {"mode": "simulated"}, "exchange": {"market_type": "swap"}}
    )  # the tiny model mostly shorts
    raw, _ = synthetic_candles({p: SAMPLE_PAIRS[p] for p in ("BTC/USDT", "ETH/USDT")}, periods=2200, seed=9)
    bars = {p: validated_bars(df, "synthetic", p, "1h")[0] for p, df in raw.items()}
    model = MorningstarModel.load(train_model(settings, bars, tmp_path / "m" / "tiny" / "v1", verbose=0).path, settings)
    frames = {p: b.frame for p, b in bars.items()}
    grid = {"decision.min_confidence": [0.34, 0.4], "risk.risk_per_trade": [0.01, 0.03]}
    res = run_sweep(
        frames,
        "model",
        grid,
        settings=settings,
        out=tmp_path / "sw",
        folds=2,
        model=model,
        scheduler=cluster[0],
        progress=False,
    )
    t = res.table
    assert (len(t), res.failed) == (8, 0) and (t["trades"] > 0).any()
    assert (
        len(list((tmp_path / "sw" / "predictions").glob("*.parquet"))) == 2 * 2 * 2
    )  # (heads, features) per pair and fold
    data = fold_data(frames, 2, history=model.prep.min_bars + 169)
    for row in t.to_dict("records"):
        s = with_overrides(settings, {k: row[k] for k in grid})
        one = backtest_once(
            data[row["fold"]]["frames"],
            ModelStrategy(model, row["decision.min_confidence"]),
            s,
            size=None,
            cash=10_000.0,
            start=data[row["fold"]]["start"],
        )
        for key, value in one.stats.items():
            assert row[key] == value or (pd.isna(row[key]) and pd.isna(value)), (key, row, value)
    sharpe = t.groupby("risk.risk_per_trade")["total_return"].apply(lambda r: r.abs().sum())
    assert sharpe.nunique() == 2  # the risk setting reached the kernel


@cluster_group
def test_a_sweep_of_a_strategy_file_equals_its_backtests_one_by_one(cluster, tmp_path):
    """A strategy file from the template, swept over its own PARAMS and a risk setting on the workers (each reads the
    file): every row equals `backtest_once` of the file with the point's parameters; an edited file runs again."""
    from morningstar_trader.backtest import history_bars
    from morningstar_trader.config import Settings
    from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles
    from morningstar_trader.sweep import file_history
    from morningstar_trader.user_strategy import new_strategy

    raw, _ = synthetic_candles({"BTC/USDT": SAMPLE_PAIRS["BTC/USDT"]}, periods=700, seed=5)
    frames = {p: df.set_index("timestamp") for p, df in raw.items()}
    settings, path = Settings(llm={"mode": "off"}), new_strategy("my_cross", tmp_path)
    grid = {"fast": [5, 10], "slow": [30, 60], "risk.risk_per_trade": [0.02]}
    sweep = lambda: run_sweep(  # noqa: E731
        frames, path, grid, settings=settings, out=tmp_path / "sw", scheduler=cluster[0], progress=False
    )
    res = sweep()
    t = res.table
    assert (len(t), res.failed, res.ran) == (4, 0, 4) and t["trades"].nunique() > 1  # the points reached the file
    history = file_history(path, grid, settings)
    assert history == history_bars(make_strategy(path, {"slow": 60}, settings))  # the longest warm-up of the grid
    data = fold_data(frames, 1, history=history)
    for row in t.to_dict("records"):
        s = with_overrides(settings, {"risk.risk_per_trade": row["risk.risk_per_trade"]})
        one = backtest_once(
            data[0]["frames"],
            make_strategy(path, {"fast": row["fast"], "slow": row["slow"]}, s),
            s,
            size=None,
            cash=10_000.0,
            start=data[0]["start"],
        )
        for key, value in one.stats.items():
            assert row[key] == value or (pd.isna(row[key]) and pd.isna(value)), (key, row, value)
    assert sweep().ran == 0  # resumed: nothing to do
    path.write_text(path.read_text().replace("np.sign(ind", "0.5 * np.sign(ind"))  # half the size: another strategy
    again = sweep()
    assert again.ran == 4 and (again.table["trades"] > 0).all()


@pytest.mark.slow
@cluster_group
def test_sweep_on_the_default_local_cluster_runs_its_report_under_runs(offline_project):
    """No --scheduler: a local cluster of worker processes; then the report notebook, indexed with the runs."""
    from morningstar_trader.runs import list_runs, load_run

    p = offline_project
    p.run("data", "sample", "--days", "30", "--pairs", "BTC/USDT", "ETH/USDT")
    out = p.run(
        "sweep",
        "--strategy",
        "sma_cross",
        "--grid",
        "fast=5,10",
        "--grid",
        "slow=30,50",
        "--size",
        "0.1",
        "--folds",
        "2",
        "--workers",
        "2",
        "--exchange",
        "synthetic",
        "--out",
        str(p.root / "sw"),
        "--notebook",
        str(Path(__file__).resolve().parents[1] / "nbs" / "sweep.ipynb"),
        timeout=240,
    ).stdout
    assert "8 results (8 run now, 0 already done), 0 failed" in out and "run sweep-" in out
    runs = list_runs(p.root / "runs")
    assert list(runs["status"]) == ["ok"] and runs["run_id"][0].startswith("sweep-")
    scraps = load_run(runs["path"][0])
    assert (
        scraps["stats"]["tasks"] == 8
        and scraps["stats"]["points"] == 4
        and 0 <= scraps["stats"]["deflated_sharpe_mean"] <= 1
    )
    assert len(scraps["top"]) == 4 and scraps["parameters"]["params"] == ["fast", "slow"]


@pytest.mark.slow
@cluster_group
@pytest.mark.timeout(900)  # three tiny trainings (two on the workers, one here): minutes on a loaded machine
def test_a_sweep_of_model_settings_trains_walk_forward_on_the_workers(cluster, tmp_path):
    """training.* points: each one `train_model` on a worker, one row per walk-forward fold (its test window),
    equal to the same training run here."""
    from test_model_backtest import TINY

    from morningstar_trader.candles import validated_bars
    from morningstar_trader.config import Settings
    from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles
    from morningstar_trader.sweep import train_and_evaluate

    settings = Settings(
        **{
            **TINY,
            "llm": {"mode": "off"},
            "exchange": {"market_type": "swap"},
            "training": {**TINY["training"], "folds": 2, "permutations": 200},
        }
    )
    raw, _ = synthetic_candles({p: SAMPLE_PAIRS[p] for p in ("BTC/USDT", "ETH/USDT")}, periods=2200, seed=9)
    frames = {p: validated_bars(df, "synthetic", p, "1h")[0].frame for p, df in raw.items()}
    res = run_sweep(
        frames,
        "model",
        {"training.horizon": [4, 6]},
        settings=settings,
        out=tmp_path / "sw",
        scheduler=cluster[0],
        progress=False,
    )
    t = res.table
    assert res.failed == 0, t["error"].dropna().tolist()
    assert len(t) == 4 and sorted(zip(t["training.horizon"], t["fold"])) == [(4, 0), (4, 1), (6, 0), (6, 1)]
    assert (t["fold_start"] < t["fold_end"]).all() and t.groupby("point")["fold_start"].is_monotonic_increasing.all()
    # the same training here: the same walk-forward test windows and statistics. The numbers themselves are not
    # compared:
    # a network trained in another process came out different once (23 trades against 19), TensorFlow's op determinism
    # notwithstanding
    here = train_and_evaluate(frames, with_overrides(settings, {"training.horizon": 6}))
    mine = t[t["training.horizon"] == 6].sort_values("fold")
    assert len(here) == len(mine) == 2
    for row, fold in zip(mine.to_dict("records"), here):
        assert (row["fold_start"], row["fold_end"]) == tuple(pd.Timestamp(x) for x in fold["test"])
        assert set(fold) - {"test"} <= set(row) and 0 <= row["p_value"] <= 1 and row["trades"] >= 0
        # the baselines on the same test window, TSMOM's lookback chosen on the fold's validation slice
        assert pd.notna(row["vol_target_sharpe"]) and row["tsmom_lookback"] in (
            "1 week",
            "1 month",
            "3 months",
            "12 months",
        )
    with pytest.raises(Exception, match="walk-forward folds of training"):
        run_sweep(
            frames,
            "model",
            {"training.horizon": [4]},
            settings=settings,
            out=tmp_path / "x",
            folds=2,
            scheduler=cluster[0],
        )


# lambdas: cloudpickle sends them by value (a worker started by hand cannot import this module)
_malloc_env = lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_")  # noqa: E731
_profiling = lambda: __import__("dask").config.get("distributed.worker.profile.enabled")  # noqa: E731


@cluster_group
def test_workers_allocate_as_this_process_does(tmp_path):
    """Neither run_sweep's local cluster nor a nanny worker started with config/dask (README) has Dask's
    MALLOC_TRIM_THRESHOLD_, which doubled a backtest's CPU time in a worker."""
    from distributed import Client

    from morningstar_trader.sweep import dask_client

    with dask_client(workers=1) as client:
        assert list(client.run(_malloc_env).values()) == [None]
    port, root = _free_port(), Path(__file__).resolve().parents[1]
    env = {**os.environ, "DASK_CONFIG": str(root / "config" / "dask")}
    procs = [
        subprocess.Popen(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(DASK),
                    "worker",
                    f"tcp://127.0.0.1:{port}",
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as c:
            c.wait_for_workers(1, timeout=60)
            assert list(c.run(_malloc_env).values()) == [None]
            assert list(c.run(_profiling).values()) == [False]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(10)
