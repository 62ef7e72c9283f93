"""Paper cycles through the installed `morningstar` script: papermill with a real kernel, the local exchange on the
real clock, a really trained tiny model; the run record, no double orders across runs, waiting for a bar close,
missed bars."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
import yaml
from artifact_kit import known_evaluation, read, write
from conftest import ROOT, TINY, Project, candles
from local_exchange import LocalExchange
from local_llm import LocalLLM, Reply

from morningstar_trader.artifact import read_metadata
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import GateSettings, Settings
from morningstar_trader.gate import trading_edge
from morningstar_trader.runs import list_runs, load_run
from morningstar_trader.training import train_model

NOTEBOOK = str(ROOT / "nbs" / "trading_cycle.ipynb")
FAKE = {"MORNINGSTAR_EXCHANGE_API_KEY": "FAKE-PAPER-KEY-77xy", "MORNINGSTAR_EXCHANGE_SECRET": "FAKE-PAPER-SECRET-88zz"}


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-runs")
    forming = pd.Timestamp.now(tz="UTC").floor("h")
    data = candles(
        2_000, end=str(forming + pd.Timedelta(hours=2))
    )  # room for the clock to pass an hour during the tests
    train = {
        p: validated_bars(df.iloc[:1700].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    train_model(Settings(**TINY), train, root / "models" / "default" / "v1", verbose=0)
    with LocalExchange(data, "1h") as server:  # its clock is the real one
        config = {
            **TINY,
            "mode": "paper",
            "pairs": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "llm": {"mode": "simulated"},
            "exchange": {"api_url": server.base_url, "timeout_ms": 2000},
            "retry": {"max_attempts": 2, "initial_delay_s": 0.05, "max_delay_s": 0.1},
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        project = Project(root, root / "config.yaml")
        project.exchange, project.candles = server, data
        yield project


def _run_id(stdout: str) -> str:
    return stdout.split()[1].rstrip(":")


def test_paper_runs_record_the_cycle_and_never_send_an_order_twice(paper):
    first = paper.run("run", "--mode", "paper", "--notebook", NOTEBOOK, env=FAKE).stdout
    scraps = load_run(_run_id(first), paper.root / "runs")
    assert {"parameters", "stats", "decisions", "orders", "fills", "equity", "alerts", "errors"} <= set(scraps)
    decisions = scraps["decisions"]
    assert list(decisions["pair"]) == ["BTC/USDT", "ETH/USDT"] and "skipped" not in set(decisions["action"])
    assert scraps["stats"]["trading"] == "active" and scraps["errors"] == []
    assert set(scraps["predictions"]["pair"]) == {"BTC/USDT", "ETH/USDT"} and "confidence" in scraps["predictions"]
    assert {"reviews", "digests"} <= set(scraps)  # the audit record (a review: each entry proposed)
    shown = paper.run("runs", "show", _run_id(first)).stdout  # printed as tables (issue 26)
    for part in ("predictions (2)", f"reviews ({len(scraps['reviews'])})", f"orders ({len(scraps['orders'])})"):
        assert f"\n{part}\n" in shown, part
    assert "fills (" in shown and "errors (0)" in shown and "BTC/USDT" in shown.split("predictions (2)")[1]
    assert (decisions["close_to_order_ms"] >= decisions["ms"]).all()
    logged = "".join(p.read_text() for p in (paper.root / "logs").glob("*"))
    for row in decisions.itertuples():  # each pair's latency from the close is logged
        assert f"{row.pair} {row.action} ready" in logged and f"(order {row.order or 'none'})" in logged
    with sqlite3.connect(paper.root / "state" / "paper.sqlite") as db:
        orders_before = db.execute("SELECT client_order_id, status FROM orders ORDER BY 1").fetchall()
        journal_before = db.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    assert journal_before == 2

    second = paper.run(
        "run", "--mode", "paper", "--notebook", NOTEBOOK, env=FAKE
    ).stdout  # the same bar, another process
    again = load_run(_run_id(second), paper.root / "runs")["decisions"]
    with sqlite3.connect(paper.root / "state" / "paper.sqlite") as db:
        orders_after = db.execute("SELECT client_order_id, status FROM orders ORDER BY 1").fetchall()
    if again["order"].ne("").any():  # the bar may have closed between the runs: then new intents are new orders
        assert {o for o, _ in orders_before} <= {o for o, _ in orders_after}
    else:
        assert orders_after == orders_before
    assert {o for o in again["order"] if o} <= {o for o, _ in orders_after}
    for path in paper.root.rglob("*"):  # secrets appear nowhere: run notebooks, logs, state, index
        if path.is_file():
            assert not any(v.encode() in path.read_bytes() for v in FAKE.values()), path

    table = paper.run("runs", "compare", _run_id(first), _run_id(second)).stdout
    assert "equity" in table and _run_id(first) in table and _run_id(second) in table
    assert "buy_hold_return" in table and "excess_return_vs_buy_hold" in table


def _expected_buy_hold(equity: pd.Series, data: dict[str, pd.DataFrame]) -> float:
    """Equal weight over the pairs, bought at the close of the first mark's bar with one taker fee, valued at the last
    mark's."""
    marks, fee = equity[~equity.index.duplicated(keep="last")], Settings(**TINY).costs.taker_fee
    closes = {
        p: df["close"].set_axis(df.index + pd.Timedelta(hours=1)) for p, df in data.items()
    }  # a candle counts from its close
    first, last = marks.index[0], marks.index[-1]
    return (
        sum(marks.iloc[0] / len(closes) * (1 - fee) * c[last] / c[first] for c in closes.values()) / marks.iloc[0] - 1
    )


@pytest.mark.slow
def test_paper_runs_carry_buy_and_hold_and_flat(paper):
    """Each paper run's stats compare the account with buy & hold and flat over the candles it saw (from the account's
    first mark among them: here one written three closes back, as an earlier run would), as a backtest's do."""
    from morningstar_trader.portfolio import PortfolioStore

    # the account as the CLI opens it (10,000 cash), whether or not an earlier test has traded in it
    store = PortfolioStore(paper.root / "state" / "paper.sqlite", initial_cash=10_000.0)
    earlier = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=3)
    store.mark(
        earlier, {p: float(paper.candles[p]["close"][earlier - pd.Timedelta(hours=1)]) for p in store.positions()}
    )
    scraps = load_run(_run_id(paper.run("run", "--mode", "paper", "--notebook", NOTEBOOK).stdout), paper.root / "runs")
    stats, equity = scraps["stats"], scraps["equity"]["equity"]
    window = equity[equity.index >= earlier]
    assert window.index[0] == earlier and window.index[-1] > earlier
    assert stats["buy_hold_return"] == pytest.approx(_expected_buy_hold(window, paper.candles), rel=1e-9)
    assert stats["flat_return"] == 0 and stats["excess_return_vs_flat"] == pytest.approx(
        window.iloc[-1] / window.iloc[0] - 1
    )
    assert stats["excess_return_vs_buy_hold"] == pytest.approx(
        stats["excess_return_vs_flat"] - stats["buy_hold_return"]
    )
    bench = scraps["benchmarks"]
    columns = ["buy_hold", "vol_target", "tsmom", "flat", "buy_hold_scaled"]  # the last: at the account's exposure
    assert list(bench.columns) == columns and list(bench.index) == list(window.index)
    assert stats["buy_hold_scaled_return"] == pytest.approx(stats["gross_exposure"] * stats["buy_hold_return"])
    assert {"vol_target_return", "tsmom_return", "tsmom_chosen_on"} <= set(stats)  # over the same window
    assert bench["buy_hold"].iloc[-1] / window.iloc[0] - 1 == pytest.approx(stats["buy_hold_return"])


def test_a_scheduled_run_waits_for_its_close_and_a_late_one_is_a_missed_bar(paper):
    close = pd.Timestamp.now(tz="UTC").ceil("s") + pd.Timedelta(
        seconds=40
    )  # as `schedule` launches it: before the close
    out = paper.run("run", "--mode", "paper", "--bar-close", close.isoformat(), "--notebook", NOTEBOOK).stdout
    scraps = load_run(_run_id(out), paper.root / "runs")
    assert 0.5 <= scraps["stats"]["ready_after_close_s"] < 30  # it waited for the close (+ settle 0.5 s)
    assert scraps["parameters"]["bar_close"] == close.isoformat()

    late = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=5)
    proc = paper.run("run", "--mode", "paper", "--bar-close", late.isoformat(), "--notebook", NOTEBOOK, check=1)
    assert "missed bar" in proc.stderr and "not trading late" in proc.stderr
    newest = list_runs(paper.root / "runs").iloc[0]
    assert newest["status"] == "failed" and "MissedBar" in newest["error"]


def test_a_live_run_needs_the_confirmation_trades_through_the_venue_and_logs_no_key(paper):
    proc = paper.run("run", "--mode", "live", "--notebook", NOTEBOOK, env=FAKE, check=2)
    assert "--i-understand-this-trades-real-money" in proc.stderr
    # a model whose card shows no edge after costs (the paper runs above trade it all the same): live refuses it...
    model_dir = paper.root / "models" / "default" / "v1"
    write(model_dir, "metadata.json", read(model_dir, "metadata.json") | {"evaluation": known_evaluation(0.3, 0.62)})
    assert not trading_edge(read_metadata(model_dir), GateSettings())[0]
    proc = paper.run(
        "run", "--mode", "live", "--i-understand-this-trades-real-money", "--notebook", NOTEBOOK, env=FAKE, check=2
    )
    assert proc.stderr.startswith("morningstar: error: refusing to trade model") and "p-value" in proc.stderr
    # ...unless the user says so
    out = paper.run(
        "run",
        "--mode",
        "live",
        "--i-understand-this-trades-real-money",
        "--allow-unproven-model",
        "--notebook",
        NOTEBOOK,
        env=FAKE,
        timeout=300,
    ).stdout  # the gate loads TensorFlow in the CLI too
    scraps = load_run(_run_id(out), paper.root / "runs")
    assert scraps["parameters"]["mode"] == "live" and scraps["stats"]["trading"] == "active"
    assert scraps["parameters"]["allow_unproven_model"] is True
    assert "refused" not in {a["kind"] for a in scraps["alerts"]}
    with sqlite3.connect(paper.root / "state" / "live.sqlite") as db:
        sent = {r[0] for r in db.execute("SELECT client_order_id FROM orders")}
    assert sent == {
        o.client_id for o in paper.exchange.account.orders.values()
    }  # the venue has exactly the store's orders
    assert {"/api/v3/account", "/api/v3/openOrders"} <= {
        r["path"] for r in paper.exchange.requests
    }  # and was reconciled with
    logs = list((paper.root / "logs").glob("*"))
    assert logs
    for path in paper.root.rglob("*"):  # keys reach no log, run notebook, state or index
        if path.is_file():
            assert not any(v.encode() in path.read_bytes() for v in FAKE.values()), path


def test_a_model_backtest_run_records_its_audit_trail(paper):
    "A backtest run notebook scraps every order, fill, per-bar prediction (each head) and review; load_run reads them."
    from morningstar_trader.store import CandleStore

    store = CandleStore(paper.root / "data")
    for pair, frame in candles(2_000, end="2024-06-01").items():
        store.save(validated_bars(frame.reset_index(names="timestamp"), "synthetic", pair, "1h")[0], "import")
    agree = (
        '{"coherence": "agree", "risk_score": 0.2, "veto": false, "direction": "%s", "size_multiplier": 0.5, '
        '"stop_loss": null, "take_profit": null, "rationale": "fine"}'
    )
    with LocalLLM(default=Reply(agree % "long")) as llm:  # a real LLM client, an answer that keeps half
        out = paper.run(
            "run",
            "--mode",
            "backtest",
            "--strategy",
            "model",
            "--exchange",
            "synthetic",
            "--start",
            "2024-05-01",
            "--llm-mode",
            "live",
            "--llm-base-url",
            llm.base_url,
            "--llm-model",
            "local-test",
            "--notebook",
            NOTEBOOK,
            env={"MORNINGSTAR_LLM_API_KEY": "sk-local-runs"},
            timeout=300,
        ).stdout
    s = load_run(_run_id(out), paper.root / "runs")
    trades, orders, fills, preds, reviews = (s[k] for k in ("trades", "orders", "fills", "predictions", "reviews"))
    assert len(trades) > 0 and s["stats"]["trades"] == len(trades)
    assert {"confidence", "volatility", "regime_id", "stop_loss", "take_profit"} <= set(preds.columns)
    assert set(preds["pair"]) == {"BTC/USDT", "ETH/USDT"} and len(preds) >= 2 * 24 * 30  # every bar of May, each pair
    assert len(fills) >= 2 * len(trades) and set(fills["client_order_id"]) <= set(orders["client_order_id"])
    entries = orders[orders["intent"] == "open"]
    assert len(reviews) >= len(entries) > 0 and set(reviews["source"]) == {"llm"} and len(llm.requests) == len(reviews)
    assert reviews["latency_ms"].gt(0).all() and (reviews["rationale"] == "fine").all()
    shown = paper.run("runs", "show", _run_id(out)).stdout.split(f"\nreviews ({len(reviews)})\n")[1]
    header = shown.splitlines()[0].split()
    assert header[:3] == ["time", "pair", "source"] and {"prompt_hash", "clamp", "latency_ms", "cost_usd"} <= set(
        header
    )


def test_configured_strategies_run_with_their_own_books(paper):
    """A model strategy and a rule strategy (buy and hold, through the same kernel), each in its own book."""
    rule = {"name": "btc", "pairs": ["BTC/USDT"], "capital": 0.4, "rule": {"name": "buy_hold"}}
    config = yaml.safe_load(paper.config.read_text()) | {"strategies": [{"name": "majors", "capital": 0.6}, rule]}
    (paper.root / "strategies.yaml").write_text(yaml.safe_dump(config))
    p = Project(paper.root, paper.root / "strategies.yaml")
    ids = {
        n: _run_id(p.run("run", "--mode", "paper", "--strategy", n, "--notebook", NOTEBOOK, env=FAKE).stdout)
        for n in ("majors", "btc")
    }
    assert ids["majors"].startswith("paper-majors-") and ids["btc"].startswith("paper-btc-")
    decisions = load_run(ids["btc"], paper.root / "runs")["decisions"]
    assert list(decisions["pair"]) == ["BTC/USDT"] and list(decisions["action"]) == ["open_long"]  # the rule entered
    listed = {line.split()[0]: line.split()[2] for line in p.run("runs", "list").stdout.splitlines()[1:]}
    assert (listed[ids["majors"]], listed[ids["btc"]]) == ("majors", "btc")
    status = json.loads(p.run("risk", "status", "--mode", "paper").stdout)
    assert set(status) == {"majors", "btc"}
    assert status["btc"]["equity"] == pytest.approx(4_000.0, rel=0.01) and status["majors"]["equity"] == pytest.approx(
        6_000.0, rel=0.01
    )
    assert (paper.root / "state" / "btc" / "paper.sqlite").is_file() and (
        paper.root / "state" / "majors" / "paper.sqlite"
    ).is_file()
    assert "--strategy" in p.run("risk", "resume", "--mode", "paper", "--reason", "checked", check=2).stderr
    assert (
        "not in the config's strategies (majors, btc)"
        in p.run("run", "--mode", "paper", "--strategy", "nope", check=2).stderr
    )


def test_a_built_in_rule_paper_trades_in_its_own_book(paper):
    """`run --mode paper --strategy tsmom`: the rule in the model's place, as a configured rule trades, in its own book
    (state/tsmom/), never the model's account."""
    main = paper.root / "state" / "paper.sqlite"
    before = sqlite3.connect(main).execute("SELECT COUNT(*) FROM journal").fetchone()[0] if main.is_file() else 0
    out = paper.run("run", "--mode", "paper", "--strategy", "tsmom", "--notebook", NOTEBOOK, env=FAKE).stdout
    scraps = load_run(_run_id(out), paper.root / "runs")
    decisions = scraps["decisions"]
    assert scraps["parameters"]["strategy"] == "tsmom" and scraps["errors"] == []
    assert list(decisions["pair"]) == ["BTC/USDT", "ETH/USDT"] and "skipped" not in set(decisions["action"])
    with sqlite3.connect(paper.root / "state" / "tsmom" / "paper.sqlite") as db:
        journal = db.execute("SELECT prediction FROM journal").fetchall()
    assert len(journal) == 2 and all('"confidence": 1.0' in row[0] for row in journal)  # the rule's heads
    after = sqlite3.connect(main).execute("SELECT COUNT(*) FROM journal").fetchone()[0] if main.is_file() else 0
    assert after == before  # the model's account saw nothing of it
    refused = paper.run("run", "--mode", "paper", "--strategy", "tsmom", "--size", "1", "--notebook", NOTEBOOK, check=1)
    assert "size, start and end are for backtests" in refused.stderr


def test_a_strategy_file_paper_trades_in_its_own_book_and_live_asks_for_proof(paper):
    """`run --mode paper --strategy-path FILE`: the user's file (from the template) in the model's place, through the
    kernel, in its own book (state/files/NAME/); live refuses it without --allow-unproven-model, before papermill."""
    main = paper.root / "state" / "paper.sqlite"
    count = "SELECT COUNT(*) FROM journal"
    before = sqlite3.connect(main).execute(count).fetchone()[0] if main.is_file() else 0
    paper.run("new-strategy", "my_cross")
    path = paper.root / "strategies" / "my_cross.py"
    args = ["run", "--strategy-path", str(path), "--param", "slow=30", "--notebook", NOTEBOOK]
    out = paper.run(*args, "--mode", "paper", env=FAKE).stdout
    scraps = load_run(_run_id(out), paper.root / "runs")
    decisions, params = scraps["decisions"], scraps["parameters"]
    assert (params["strategy"], params["strategy_path"], params["strategy_params"]) == (
        "my_cross",
        str(path),
        {"slow": "30"},
    )
    assert scraps["errors"] == [] and list(decisions["pair"]) == ["BTC/USDT", "ETH/USDT"]
    assert "skipped" not in set(decisions["action"])
    listed = next(row for row in paper.run("runs", "list").stdout.splitlines() if row.split()[:1] == [_run_id(out)])
    assert " my_cross " in listed  # runs list names the file's strategy
    with sqlite3.connect(paper.root / "state" / "files" / "my_cross" / "paper.sqlite") as db:
        journal = [json.loads(row[0]) for row in db.execute("SELECT prediction FROM journal")]
    assert len(journal) == 2 and all(j["confidence"] == 1.0 and j["action"] in (-1, 1) for j in journal)  # the file's
    after = sqlite3.connect(main).execute(count).fetchone()[0] if main.is_file() else 0
    assert after == before  # the model's account saw nothing of it
    stats = scraps["stats"]  # buy & hold at the account's exposure beside buy & hold, over the candles it saw
    assert "buy_hold_return" in stats and 0 <= stats["gross_exposure"] <= 1 and "buy_hold_scaled_return" in stats
    sheet = (paper.root / "runs" / "tearsheets" / "paper-my_cross.html").read_text()  # the account's tearsheet
    assert scraps["tearsheet"].endswith("paper-my_cross.html") and "<title>paper account my_cross</title>" in sheet
    assert "fast 40 must be below slow 30" in paper.run(*args, "--param", "fast=40", "-m", "paper", check=2).stderr
    refused = paper.run(*args, "-m", "live", "--i-understand-this-trades-real-money", env=FAKE, check=2).stderr
    assert refused.startswith("morningstar: error: refusing to trade model rule my_cross (fast 10, slow 30;")
