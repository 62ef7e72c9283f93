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

from morningstar_trader.backtest import SmaCross, run_backtest


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
        warnings.simplefilter("ignore")   # the peer warns about the trade left open at the end
        peer = Backtest(data, PeerSmaCross, cash=100_000, commission=0.001).run()._trades
    bars = data.rename(columns=str.lower).tz_localize("UTC")
    result = run_backtest(bars, SmaCross(10, 20), size=1, fee=0.001, cash=100_000)
    ours = result.trades[result.trades["exit_reason"] == "signal"].reset_index(drop=True)
    expected = pd.DataFrame({"side": np.where(peer["Size"] > 0, "long", "short"),
                             "entry_time": peer["EntryTime"].dt.tz_localize("UTC"), "entry_price": peer["EntryPrice"],
                             "exit_time": peer["ExitTime"].dt.tz_localize("UTC"), "exit_price": peer["ExitPrice"]})
    assert len(ours) == len(peer) > 50
    pd.testing.assert_frame_equal(ours[expected.columns], expected, check_exact=True)
    assert ours["fees"].sum() == pytest.approx(peer["Commission"].sum(), rel=1e-9)
    # the position left open is closed at the last close
    end = result.trades.iloc[-1]
    assert end["exit_reason"] == "end" and end["exit_price"] == bars["close"].iloc[-1] and end["exit_time"] == bars.index[-1]
