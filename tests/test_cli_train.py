"""`morningstar train` end to end on the sample set, through the installed script; the artifact loads and predicts."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from conftest import Project, write_config
from morningstar_trader.config import load_config
from morningstar_trader.model import MorningstarModel, resolve_model_dir
from morningstar_trader.store import CandleStore

TINY = """features:
  window: 12
  indicators:
    - {name: rsi, params: {period: 7}}
    - {name: natr, params: {period: 7}}
    - {name: log_return, params: {period: 1}}
model: {conv_filters: 4, rnn_units: 4, dense_units: 8}
training: {horizon: 6, regime_window: 12, atr_period: 7, train_bars: 600, val_bars: 150, test_bars: 200, folds: 2, epochs: 3, batch_size: 128}
paths: {models_dir: models}
"""


def test_train_on_the_sample_set_with_alternative_data_writes_a_loadable_model(tmp_path, monkeypatch):
    hours = pd.date_range("2023-01-01", periods=60 * 24, freq="h", tz="UTC")
    news = pd.DataFrame({"published_at": hours[::7] + pd.Timedelta(minutes=13), "sentiment": np.sin(np.arange(len(hours[::7])))})
    news.to_csv(tmp_path / "news.csv", index=False)
    alt = TINY.replace("model:", "  alt_data:\n    - {name: news, path: news.csv, columns: [sentiment]}\nmodel:")
    project = Project(tmp_path, write_config(tmp_path, extra=alt))
    project.run("data", "sample", "--days", "60", "--pairs", "BTC/USDT", "ETH/USDT")
    out = project.run("train", "--exchange", "synthetic", "--quiet", "--epochs", "2").stdout
    assert "balanced_accuracy" in out and "qlike" in out and "model written to" in out
    monkeypatch.chdir(tmp_path)   # the config's relative paths are relative to the working directory
    cfg = load_config(project.config)
    path = resolve_model_dir(tmp_path / "models", "default")
    model = MorningstarModel.load(path, cfg)
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["folds"][0]["epochs_run"] <= 2 and meta["data"]["exchanges"] == ["synthetic"]
    assert meta["features"]["context_names"][-1] == "news_sentiment"
    bars = CandleStore(tmp_path / "data").load("synthetic", "ETH/USDT", "1h")
    pred = model.predict(model.prep.transform(bars))
    assert pred["action"].shape == pred["volatility"].shape == (len(bars) - model.prep.min_bars + 1,)


def test_train_bad_input(tmp_path):
    project = Project(tmp_path, write_config(tmp_path, extra=TINY))
    proc = project.run("train", "--exchange", "synthetic", check=1)
    assert "no candles stored for synthetic BTC/USDT 1h" in proc.stderr
    proc = project.run("train", "--exchange", "synthetic", "--epochs", "0", check=2)
    assert "training.epochs" in proc.stderr
    project.run("data", "sample", "--days", "20", "--pairs", "BTC/USDT", "ETH/USDT")
    proc = project.run("train", "--exchange", "synthetic", check=1)
    assert "too little history for 2 fold(s)" in proc.stderr
