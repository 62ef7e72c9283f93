"""Parity with backtesting.py: SMA(10, 20) crossover, 1 unit, 0.1 % commission, orders at the next open, no slippage.

On its own EUR/USD hourly and GOOG daily data, the trades both engines close on signals must be identical
(side, entry and exit time and price) and the fees equal to 1e-9 relative. The one documented difference is the
end of data: backtesting.py's `finalize_trades` closes a leftover position at the last bar's open, ours at its
close (exit reason `end`), so the peer runs without finalisation and our `end` trade is compared separately.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import EURUSD, GOOG

from morningstar_trader.backtest import SmaCross, run_rule_backtest


def _sma(values, n):
    return pd.Series(values).rolling(n).mean()


class PeerSmaCross(Strategy):
    def init(self):
        self.fast = self.I(_sma, self.data.Close, 10)
        self.slow = self.I(_sma, self.data.Close, 20)

    def next(self):
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy(size=1)
        elif crossover(self.slow, self.fast):
            self.position.close()
            self.sell(size=1)


@pytest.mark.parametrize("name, data", [("EURUSD", EURUSD), ("GOOG", GOOG)])
def test_trades_and_fees_equal_backtesting_py(name, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peer warns about the trade left open at the end
        peer = Backtest(data, PeerSmaCross, cash=100_000, commission=0.001).run()._trades
    bars = data.rename(columns=str.lower).tz_localize("UTC")
    result = run_rule_backtest(bars, SmaCross(10, 20), size=1, fee=0.001, cash=100_000)
    ours = result.trades[result.trades["exit_reason"] == "signal"].reset_index(drop=True)
    expected = pd.DataFrame(
        {
            "side": np.where(peer["Size"] > 0, "long", "short"),
            "entry_time": peer["EntryTime"].dt.tz_localize("UTC"),
            "entry_price": peer["EntryPrice"],
            "exit_time": peer["ExitTime"].dt.tz_localize("UTC"),
            "exit_price": peer["ExitPrice"],
        }
    )
    assert len(ours) == len(peer) > 50
    pd.testing.assert_frame_equal(ours[expected.columns], expected, check_exact=True)
    assert ours["fees"].sum() == pytest.approx(peer["Commission"].sum(), rel=1e-9)
    # the position left open is closed at the last close
    end = result.trades.iloc[-1]
    assert (
        end["exit_reason"] == "end"
        and end["exit_price"] == bars["close"].iloc[-1]
        and end["exit_time"] == bars.index[-1]
    )


class PeerCross(Strategy):
    fast, slow = 2, 4

    def init(self):
        self.f = self.I(_sma, self.data.Close, self.fast)
        self.s = self.I(_sma, self.data.Close, self.slow)

    def next(self):
        if crossover(self.f, self.s):
            self.position.close()
            self.buy(size=1)
        elif crossover(self.s, self.f):
            self.position.close()
            self.sell(size=1)


@pytest.mark.parametrize("seed, fast, slow", [(0, 2, 4), (1, 2, 4), (2, 3, 6), (3, 2, 5), (4, 4, 8)])
def test_exact_sma_ties_and_repeated_crossovers_give_the_same_trades(seed, fast, slow):
    # integer price steps make the two averages tie exactly, often; after a tie, the next crossover can repeat the
    # direction already held: backtesting.py's close-then-buy closes and re-enters, and so must we
    rng = np.random.default_rng(seed)
    close = 1_000 + np.cumsum(rng.integers(-2, 3, 4_000)).astype(float)
    idx = pd.date_range("2024-01-01", periods=len(close), freq="h")
    data = pd.DataFrame(
        {"Open": np.r_[close[0], close[:-1]], "High": close + 1, "Low": close - 1, "Close": close, "Volume": 1.0},
        index=idx,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = Backtest(data, PeerCross, cash=1e9, commission=0.001).run(fast=fast, slow=slow)._trades
    result = run_rule_backtest(
        data.rename(columns=str.lower).tz_localize("UTC"), SmaCross(fast, slow), size=1, fee=0.001, cash=1e9
    )
    ours = result.trades[result.trades["exit_reason"] == "signal"].reset_index(drop=True)
    repeated = (ours["side"] == ours["side"].shift()) & (ours["entry_time"] == ours["exit_time"].shift())
    assert repeated.any(), "the data should hold a repeated crossover after a tie"
    expected = pd.DataFrame(
        {
            "side": np.where(peer["Size"] > 0, "long", "short"),
            "entry_time": peer["EntryTime"].dt.tz_localize("UTC"),
            "entry_price": peer["EntryPrice"],
            "exit_time": peer["ExitTime"].dt.tz_localize("UTC"),
            "exit_price": peer["ExitPrice"],
        }
    )
    pd.testing.assert_frame_equal(ours[expected.columns], expected, check_exact=True)
