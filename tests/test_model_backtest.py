"""Decision-sized backtests with a real (tiny) trained model, the simulated reviewer and the risk checks."""

from __future__ import annotations

import pytest

from morningstar_trader.backtest import ModelStrategy, run_kernel_backtest, run_rule_backtest
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import LlmSettings, Settings
from morningstar_trader.model import MorningstarModel
from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles
from morningstar_trader.supervisor import Supervisor
from morningstar_trader.training import train_model

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
    },
    decision={"min_confidence": 0.34},
    risk={"max_open_positions": 1, "max_position_fraction": 0.3, "risk_per_trade": 0.02, "cooldown_bars": 5},
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    settings = Settings(**TINY)
    raw, _ = synthetic_candles({p: SAMPLE_PAIRS[p] for p in ("BTC/USDT", "ETH/USDT")}, periods=2200, seed=9)
    bars = {p: validated_bars(df, "synthetic", p, "1h")[0] for p, df in raw.items()}
    result = train_model(settings, bars, tmp_path_factory.mktemp("m") / "tiny" / "v1", verbose=0)
    return settings, MorningstarModel.load(result.path, settings), {p: b.frame for p, b in bars.items()}


def test_decision_sized_backtest_obeys_the_rules(setup):
    settings, model, frames = setup
    sup = Supervisor(LlmSettings(mode="simulated"))
    res = run_kernel_backtest(
        frames,
        ModelStrategy(model, settings.decision.min_confidence),
        settings,
        supervisor=sup,
        cash=10_000,
        can_short=True,
    )
    t, log = res.trades, res.decisions
    assert len(t) > 5, "the model should trade on 2,200 bars"
    # P&L reconciles with equity
    assert res.equity.iloc[-1] == pytest.approx(10_000 + t["pnl"].sum(), rel=1e-9)
    # never more than one position at a time (max_open_positions 1), and denials say why
    spans = sorted(zip(t["entry_time"], t["exit_time"]))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    # with a reviewer, the unreviewed twin gates entries first; without one, the risk stage denies, and says why
    bare = run_kernel_backtest(
        frames, ModelStrategy(model, settings.decision.min_confidence), settings, cash=10_000, can_short=True
    ).decisions
    denied = bare[bare["verdict"].str.contains("denied")]
    assert denied["verdict"].str.contains("max_open_positions 1|cooldown|already open|trading is halted").all() and len(
        denied
    ), denied["verdict"].value_counts()
    assert log["reasons"].str.contains("the run without the review does not enter here").any()
    # every entry fills at the open after an approved decision, within the position cap of that moment's equity
    approved = log[log["verdict"].str.startswith("approved") & log["action"].str.startswith("open_")]
    assert (log["verdict"] == "no order").any()  # signals not taken are logged with their reasons
    for row in t.itertuples():
        decided = approved[(approved["pair"] == row.pair) & (approved["time"] < row.entry_time)].iloc[-1]
        nxt = frames[row.pair].index[frames[row.pair].index.get_loc(decided["time"]) + 1]
        assert row.entry_time == nxt and row.size == decided["size"]
        equity_then = res.equity.loc[decided["time"]]
        assert row.size * frames[row.pair].loc[decided["time"], "close"] <= 0.3 * equity_then * (1 + 1e-9)
    assert "simulated (rule-based, not an LLM)" in " ".join(log["reasons"])


def test_the_model_also_runs_with_a_fixed_size(setup):
    settings, model, frames = setup
    res = run_rule_backtest(frames["ETH/USDT"], ModelStrategy(model, 0.34), size=1.0)
    assert len(res.trades) > 0 and set(res.trades["exit_reason"]) <= {"signal", "stop_loss", "take_profit", "end"}
    assert res.equity.iloc[-1] == pytest.approx(10_000 + res.trades["pnl"].sum(), rel=1e-9)


def test_decision_sized_backtest_records_through_the_state_store(setup, tmp_path):
    from morningstar_trader.portfolio import PortfolioStore

    settings, model, frames = setup
    store = PortfolioStore(tmp_path / "state.sqlite", initial_cash=10_000.0)
    res = run_kernel_backtest(frames, ModelStrategy(model, 0.34), settings, cash=10_000, store=store)
    orders = store.orders().query("intent not in ('protect', 'protect_target')")  # resting stops, targets: no fills
    filled = orders[orders["status"] == "filled"]
    assert len(filled) == 2 * len(res.trades) and orders["status"].isin(["filled", "cancelled"]).all()
    assert (orders["status"] == "cancelled").sum() <= 2  # at most what the last close decided, cancelled at the end
    assert store.positions() == {}  # everything closed at the end, in the store too
    assert store.cash() == pytest.approx(res.equity.iloc[-1], rel=1e-12)
