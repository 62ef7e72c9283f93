"""`morningstar backtest` with the rule strategies, end to end on the sample set."""

from __future__ import annotations

import html
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
        (
            ["--strategy", "tsmom", "--param", "lookback=0"],
            "--param lookback: Input should be greater than or equal to 1",
        ),
        (["--strategy", "tsmom", "--param", "fast=3"], "tsmom takes lookback=<int>"),
        (["--strategy", "sma_cross", "--size", "1", "--param", "fast=ten"], "fast must be int"),
        (["--strategy", "sma_cross", "--size", "1", "--param", "speed=3"], "sma_cross takes fast=<int>, slow=<int>"),
        (
            ["--strategy", "sma_cross", "--size", "1", "--param", "fast=30", "--param", "slow=5"],
            "fast 30 must be below slow 5",
        ),
        (["--strategy", "buy_hold", "--size", "1", "--start", "2030-01-01"], "at least 2 bars are needed"),
        (["--strategy", "model"], "no trained model under"),
    ],
)
def test_backtest_bad_input(offline_project, args, message):
    offline_project.run("data", "sample", "--days", "10", "--pairs", "BTC/USDT", "ETH/USDT")
    proc = offline_project.run("backtest", "--exchange", "synthetic", *args, check=None)
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr
    assert not (offline_project.root / "runs").exists() or not list((offline_project.root / "runs").rglob("trades.csv"))


def test_tsmom_and_buy_hold_without_size_trade_decision_sized_beside_the_baselines(offline_project):
    """A rule without --size runs through the kernel (sized by the decision stage, decisions.csv, state.sqlite); its
    statistics carry the four benchmarks on the same bars, and TSMOM's lookback says where it was chosen."""
    p = offline_project
    p.run("data", "sample", "--days", "150", "--pairs", "BTC/USDT", "ETH/USDT")
    args = ["backtest", "--exchange", "synthetic", "--start", "2023-04-01", "--llm-mode", "off"]
    out = p.run(*args, "--strategy", "tsmom", "--param", "lookback=168", "--out", str(p.root / "ts")).stdout
    stats = json.loads((p.root / "ts" / "stats.json").read_text())
    decisions = pd.read_csv(p.root / "ts" / "decisions.csv")
    trades = pd.read_csv(p.root / "ts" / "trades.csv")
    assert (p.root / "ts" / "state.sqlite").is_file() and len(decisions) > 0
    assert stats["trades"] == len(trades) > 0 and set(trades["side"]) == {"long"}  # spot: the short side is flat
    assert pd.to_datetime(trades["entry_time"]).min() >= pd.Timestamp("2023-04-01", tz="UTC")
    for name in ("buy_hold", "vol_target", "tsmom"):
        assert {f"{name}_return", f"{name}_sharpe", f"{name}_max_drawdown", f"excess_return_vs_{name}"} <= set(stats)
    assert stats["vol_target_trades"] > 0 and stats["vol_target_turnover"] > 0
    # 90 days of history before --start (2,160 hourly bars): enough to choose among 1 week and 1 month
    assert (
        stats["tsmom_chosen_on"].startswith("history before the start") and "3 months" not in stats["tsmom_chosen_on"]
    )
    assert stats["tsmom_lookback"] in ("1 week", "1 month") and "tsmom_chosen_on" in out
    hold = p.run(*args, "--strategy", "buy_hold", "--out", str(p.root / "bh")).stdout
    bh = json.loads((p.root / "bh" / "stats.json").read_text())
    # the rule buy_hold through the kernel: long at every close, its stops and targets set by the decision stage
    assert bh["trades"] == len(pd.read_csv(p.root / "bh" / "trades.csv", usecols=["side"]).query("side == 'long'")) > 0
    assert "written to" in hold
    # the same bars, the same benchmarks, whichever strategy ran
    assert {k: bh[k] for k in ("buy_hold_return", "vol_target_return", "tsmom_return")} == pytest.approx(
        {k: stats[k] for k in ("buy_hold_return", "vol_target_return", "tsmom_return")}
    )


def test_the_report_reads_as_a_report_and_the_backtest_is_a_run(offline_project):
    """`morningstar backtest` prints a header, the strategy beside its benchmarks, per-pair and exit-reason tables and
    every statistic (percentages, integers), and indexes the result: `runs list`, `runs show`, `runs compare`."""
    p = offline_project
    p.run("data", "sample", "--days", "40", "--pairs", "BTC/USDT", "ETH/USDT")
    args = ["backtest", "--strategy", "sma_cross", "--size", "0.1", "--exchange", "synthetic"]
    out = p.run(*args, "--param", "fast=5", "--param", "slow=30").stdout
    head = out.split("\n\n")[1].splitlines()
    assert head[0] == "strategy  sma_cross (fast 5, slow 30)" and head[1].startswith("pairs     BTC/USDT, ETH/USDT")
    assert head[2].startswith("range     2023-01-01 00:00 .. ") and "taker fee 0.100%" in head[3]
    for table in ("strategy and benchmarks", "per pair", "exit reasons", "all statistics"):
        assert f"\n{table}" in out, table
    stats = json.loads(next((p.root / "runs" / "backtests").glob("*/stats.json")).read_text())
    lines = dict(line.split(None, 1) for line in out.split("all statistics\n")[1].splitlines() if line.strip())
    assert lines["trades"].strip() == str(stats["trades"])  # an integer, not 270.0000
    assert lines["total_return"].strip() == f"{stats['total_return']:+.2%}"
    page = next((p.root / "runs" / "backtests").glob("*/tearsheet.html")).read_text()
    assert "monthly returns" in page and "underwater" in page and 'src="http' not in page  # offline
    # buy & hold as invested as the strategy (its average gross exposure of the cash), in the report and the tearsheet
    scaled = f"buy & hold at {stats['gross_exposure']:.0%} (its exposure)"
    assert scaled in out.split("strategy and benchmarks")[1].split("\n\n")[0] and html.escape(scaled) in page
    assert stats["buy_hold_scaled_return"] == pytest.approx(stats["gross_exposure"] * stats["buy_hold_return"])
    per_pair = out.split("per pair\n")[1].split("\n\n")[0].splitlines()
    assert [row.split()[0] for row in per_pair[1:]] == ["BTC/USDT", "ETH/USDT", "TOTAL"]
    # a second run, then both are runs: listed, shown, compared
    p.run(*args, "--param", "fast=10", "--param", "slow=40")
    listed = p.run("runs", "list").stdout.splitlines()[1:]
    ids = [row.split()[0] for row in listed]
    assert len(ids) == 2 and all(i.startswith("backtest-") and "sma_cross" in row for i, row in zip(ids, listed))
    shown = json.loads(p.run("runs", "show", ids[0], "--json").stdout)
    assert shown["parameters"]["param"] == ["fast=10", "slow=40"] and shown["stats"]["trades"] == shown["trades"]
    compared = p.run("runs", "compare", *ids).stdout
    assert "param" in compared and "excess_return_vs_buy_hold" in compared


def test_stakes_size_every_entry_in_quote_currency_or_of_equity(offline_project):
    """`--stake-fraction 0.2`: every entry 20 % of the equity at its decision; `--stake 1000`: 1,000 USDT each, on
    BTC and ETH alike (the fixed `--size` is units of each pair's base asset); a short signal on spot is said so."""
    p = offline_project
    p.run("data", "sample", "--days", "40", "--pairs", "BTC/USDT", "ETH/USDT")
    args = ["backtest", "-s", "sma_cross", "-e", "synthetic", "--llm-mode", "off"]
    out = p.run(*args, "--stake-fraction", "0.2", "-o", str(p.root / "f")).stdout
    assert "sizing    stake 20% of equity per entry" in out and "shorts    none: a spot account cannot short" in out
    p.run(*args, "--stake", "1000", "-o", str(p.root / "q"))
    for folder, expected in (("f", None), ("q", 1_000.0)):
        trades = pd.read_csv(p.root / folder / "trades.csv", parse_dates=["entry_time"])
        equity = pd.read_csv(p.root / folder / "equity.csv", index_col=0, parse_dates=True)["equity"]
        notional = trades["entry_price"] * trades["size"]
        # decided at a close with that close's equity, filled at the next open: a bar's move apart
        target = 0.2 * equity.reindex(trades["entry_time"], method="ffill").to_numpy() if expected is None else expected
        assert set(trades["pair"]) == {"BTC/USDT", "ETH/USDT"} and len(trades) > 10
        assert (abs(notional / target - 1) < 0.05).all(), (notional / target).describe()
    proc = p.run(*args, "--stake", "1000", "--size", "1", check=2)
    assert "choose one of --size (fixed units), --stake (quote currency) and --stake-fraction" in proc.stderr
