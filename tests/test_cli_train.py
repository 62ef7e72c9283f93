"""`morningstar train` end to end on the sample set, through the installed script; the artifact loads and predicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import Project, write_config
from lab_project import NOISE
from local_llm import LocalLLM, Reply

from morningstar_trader.artifact import resolve_model_dir
from morningstar_trader.config import load_config
from morningstar_trader.model import MorningstarModel
from morningstar_trader.store import CandleStore

TINY = """features:
  window: 12
  indicators:
    - {name: rsi, params: {period: 7}}
    - {name: natr, params: {period: 7}}
    - {name: log_return, params: {period: 1}}
model: {conv_filters: 4, rnn_units: 4, dense_units: 8}
training: {horizon: 6, regime_window: 12, atr_period: 7, train_bars: 600, val_bars: 150, test_bars: 200, folds: 2,
           epochs: 3, batch_size: 128}
paths: {models_dir: models}
decision: {min_confidence: 0.34}   # a 2-epoch model is never confident: let it propose
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Project:
    """A project with two sample pairs, a news table, and a tiny model trained on them through the CLI."""
    root = tmp_path_factory.mktemp("trained")
    hours = pd.date_range("2023-01-01", periods=60 * 24, freq="h", tz="UTC")
    news = pd.DataFrame(
        {"published_at": hours[::7] + pd.Timedelta(minutes=13), "sentiment": np.sin(np.arange(len(hours[::7])))}
    )
    news.to_csv(root / "news.csv", index=False)
    alt = TINY.replace("model:", "  alt_data:\n    - {name: news, path: news.csv, columns: [sentiment]}\nmodel:")
    project = Project(root, write_config(root, extra=alt))
    project.run("data", "sample", "--days", "60", "--pairs", "BTC/USDT", "ETH/USDT")
    proc = project.run("train", "--exchange", "synthetic", "--quiet", "--epochs", "2")
    project.train_output, project.train_stderr = proc.stdout, proc.stderr
    return project


def test_train_on_the_sample_set_with_alternative_data_writes_a_loadable_model(trained, monkeypatch):
    out = trained.train_output
    assert "balanced_accuracy" in out and "qlike" in out and "model written to" in out
    noise = NOISE.search(out + trained.train_stderr)  # TensorFlow, absl and CUDA start-up lines never reach the console
    assert noise is None, noise.group(0)
    monkeypatch.chdir(trained.root)  # the config's relative paths are relative to the working directory
    cfg = load_config(trained.config)
    path = resolve_model_dir(trained.root / "models", "default")
    model = MorningstarModel.load(path, cfg)
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["folds"][0]["epochs_run"] <= 2 and meta["data"]["exchanges"] == ["synthetic"]
    assert meta["features"]["context_names"][-1] == "news_sentiment"
    bars = CandleStore(trained.root / "data").load("synthetic", "ETH/USDT", "1h")
    pred = model.predict(model.prep.transform(bars))
    assert pred["action"].shape == pred["volatility"].shape == (len(bars) - model.prep.min_bars + 1,)


def _proposing_bar(project: Project, monkeypatch) -> pd.Timestamp:
    """The open time of a recent bar at which the trained model proposes a trade."""
    monkeypatch.chdir(project.root)
    cfg = load_config(project.config)
    model = MorningstarModel.load(resolve_model_dir(project.root / "models", "default"), cfg)
    feats = model.prep.transform(CandleStore(project.root / "data").load("synthetic", "ETH/USDT", "1h"))
    pred = model.predict(feats)  # an entry the decision stage proposes on spot: long, confident enough
    acting = np.flatnonzero((pred["action"] > 0) & (pred["confidence"] >= cfg.decision.min_confidence))
    assert len(acting), "the tiny model never proposes a trade"
    return feats.times[acting[-1]]


def test_review_asks_a_local_openai_compatible_server(trained, monkeypatch):
    at = _proposing_bar(trained, monkeypatch)
    reply = {
        "coherence": "uncertain",
        "risk_score": 0.7,
        "veto": False,
        "direction": "flat",
        "size_multiplier": 0.5,
        "stop_loss": None,
        "take_profit": None,
        "rationale": "thin evidence",
    }
    with LocalLLM() as llm:
        llm.script(Reply(json.dumps(reply)))
        out = trained.run(
            "review",
            "--pair",
            "ETH/USDT",
            "--exchange",
            "synthetic",
            "--at",
            at.isoformat(),
            "--llm-mode",
            "live",
            "--llm-base-url",
            llm.base_url,
            "--llm-model",
            "local-test",
            env={"MORNINGSTAR_LLM_API_KEY": "sk-local"},
        ).stdout
        assert llm.requests, out
        sent = llm.requests[0]["messages"][1]["content"]
    result = json.loads(out)
    assert result["review"]["source"] == "llm" and result["review"]["veto"] is True  # direction flat = veto
    assert result["proposal"]["pair"] == "ETH/USDT" and '"pair": "ETH/USDT"' in sent and "natr_7" in sent
    simulated = json.loads(
        trained.run(
            "review", "--pair", "ETH/USDT", "--exchange", "synthetic", "--at", at.isoformat(), "--llm-mode", "simulated"
        ).stdout
    )
    assert simulated["review"]["source"] == "simulated (rule-based, not an LLM)"
    assert (
        simulated["decision"]["pair"] == "ETH/USDT" and simulated["proposal"]["size"] > 0
    )  # sized as the cycle sizes it


def test_review_of_a_rule_asks_about_the_rules_proposal(trained):
    """With `rule:` in the config, `review` asks about the rule's proposal (what the cycle would trade)."""
    import yaml

    config = yaml.safe_load(trained.config.read_text()) | {"rule": {"name": "buy_hold"}}
    (trained.root / "rule.yaml").write_text(yaml.safe_dump(config))
    rule = Project(trained.root, trained.root / "rule.yaml")
    out = json.loads(
        rule.run("review", "--pair", "ETH/USDT", "--exchange", "synthetic", "--llm-mode", "simulated").stdout
    )
    assert out["proposal"]["side"] == "long" and out["proposal"]["size"] > 0
    assert any("model long with confidence 1.00" in r for r in out["decision"]["reasons"])


def test_review_in_live_mode_without_a_key_fails_at_start(trained):
    proc = trained.run(
        "review",
        "--pair",
        "ETH/USDT",
        "--exchange",
        "synthetic",
        "--llm-mode",
        "live",
        env={"MORNINGSTAR_LLM_API_KEY": ""},
        check=1,
    )
    assert "MORNINGSTAR_LLM_API_KEY is not set" in proc.stderr


def test_train_bad_input(tmp_path):
    project = Project(tmp_path, write_config(tmp_path, extra=TINY))
    proc = project.run("train", "--exchange", "synthetic", check=1)
    assert "no candles stored for synthetic BTC/USDT 1h" in proc.stderr
    proc = project.run("train", "--exchange", "synthetic", "--epochs", "0", check=2)
    assert "training.epochs" in proc.stderr
    project.run("data", "sample", "--days", "20", "--pairs", "BTC/USDT", "ETH/USDT")
    proc = project.run("train", "--exchange", "synthetic", check=1)
    assert "too little history for 2 fold(s)" in proc.stderr


def test_model_backtest_through_the_cli(trained):
    out = trained.run(
        "backtest",
        "--exchange",
        "synthetic",
        "--pairs",
        "ETH/USDT",
        "--llm-mode",
        "off",
        "--param",
        "min_confidence=0.34",
        "--out",
        str(trained.root / "bt"),
        "--check-lookahead",
    ).stdout
    assert "look-ahead check: every decision bar gives the same signal" in out
    decisions = pd.read_csv(trained.root / "bt" / "decisions.csv")
    assert (decisions["verdict"] == "approved").any() and (trained.root / "bt" / "state.sqlite").is_file()
    assert set(decisions["verdict"].str.split().str[0]) <= {"approved", "no", "exits", "open_long", "open_short"}
