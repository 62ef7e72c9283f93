"""Property tests of the backtest engine over random signals, stops, fees and slippage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from morningstar_trader.backtest import run_rule_backtest
from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles

RAW, _ = synthetic_candles({"SOL/USDT": SAMPLE_PAIRS["SOL/USDT"]}, periods=400, seed=12)
BARS = RAW["SOL/USDT"].set_index("timestamp")


@dataclass(frozen=True)
class Scripted:
    """Signals fixed in advance: whatever the engine does, it can only act on them one bar later."""

    direction: tuple
    stop: float
    target: float
    name: str = "scripted"

    def signals(self, frame):
        out = pd.DataFrame({"direction": np.array(self.direction[: len(frame)], np.int8)}, index=frame.index)
        return out.assign(stop_loss=self.stop, take_profit=self.target) if self.stop == self.stop else out


@settings(max_examples=60, deadline=None)
@given(
    direction=st.lists(st.sampled_from([-1, 0, 0, 0, 1]), min_size=400, max_size=400),
    stop=st.sampled_from([float("nan"), 0.005, 0.02, 0.1]),
    target=st.sampled_from([0.01, 0.05]),
    fee=st.floats(0, 0.01),
    slippage=st.floats(0, 50),
    size=st.floats(0.1, 10),
    short=st.booleans(),
)
def test_engine_invariants(direction, stop, target, fee, slippage, size, short):
    strategy = Scripted(tuple(direction), stop, target)
    res = run_rule_backtest(BARS, strategy, size=size, fee=fee, slippage_bps=slippage, cash=1_000, allow_short=short)
    t = res.trades
    # cash + position value is equity at every close; at the end everything is closed, so equity = cash + P&L
    assert np.isclose(res.equity.iloc[-1], 1_000 + t["pnl"].sum(), rtol=1e-9, atol=1e-6)
    signal_bars = set(BARS.index[np.flatnonzero(np.array(direction) != 0)])
    for row in t.itertuples():
        decided = BARS.index[BARS.index.get_loc(row.entry_time) - 1]
        assert decided in signal_bars and row.entry_time > decided  # no fill before the decision bar closed
        assert row.exit_time >= row.entry_time and row.size == size
        assert short or row.side == "long"
    # positions never overlap
    assert all(a <= b for a, b in zip(t["exit_time"], t["entry_time"].iloc[1:]))
