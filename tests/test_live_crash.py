"""Crash tests: a process sending one live order is SIGKILLed at each point of the order path, then restarted with the
same intent. Afterwards: exactly one venue order for the intent, the store's fills are the venue's trades (none lost,
none twice), the store's position and cash equal the venue's balances, and reconciliation agrees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HOUR_MS, candles
from local_exchange import LocalExchange

from morningstar_trader.config import ExchangeSettings, load_secrets
from morningstar_trader.live_execution import LiveExecutor, reconcile
from morningstar_trader.market_data import make_exchange
from morningstar_trader.portfolio import PortfolioStore

DRIVER = Path(__file__).with_name("live_driver.py")
ENV = {"MORNINGSTAR_EXCHANGE_API_KEY": "crash-key", "MORNINGSTAR_EXCHANGE_SECRET": "crash-secret"}
CID = "ms-crash-intent-1"


@pytest.fixture
def venue():
    data = candles(200)
    with LocalExchange(
        data,
        "1h",
        now_ms=int(data["BTC/USDT"].index[-1].timestamp() * 1000) + HOUR_MS // 2,
        balances={"USDT": 100_000.0},
    ) as server:
        yield server


def start(server, store, *order, failpoint=None):
    env = {**os.environ, **ENV, "MORNINGSTAR_FAILPOINT": failpoint or ""}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), server.base_url, str(store), CID, *order],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=DRIVER.parent,
    )


def killed(proc):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}\n{out}\n{err}"


def finished(proc) -> dict:
    out, err = proc.communicate(timeout=180)  # a deadline against a hang (the driver imports TensorFlow), not a timing
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def kill_when(proc, condition, timeout_s=30.0):
    "SIGKILL `proc` from outside as soon as `condition()` holds (the venue has acted, the reply is still on its way)."
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline and proc.poll() is None, "the condition never held"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    killed(proc)


def check(server, store_path, expected_status):
    intents = [o for o in server.account.orders.values() if o.client_id == CID]
    assert len(intents) == 1, f"{len(intents)} venue orders for one intent"
    store = PortfolioStore(store_path)
    assert store.order(CID)["status"] == expected_status
    venue_trades = {
        f"{pair}:{t['id']}"
        for t in server.account.trades
        for pair in ("BTC/USDT", "ETH/USDT")
        if t["symbol"] == pair.replace("/", "")
    }
    with store._tx() as db:
        recorded = [r[0] for r in db.execute("SELECT trade_id FROM fills")]
    assert sorted(recorded) == sorted(venue_trades)
    positions = store.positions()
    for asset, pair in (("BTC", "BTC/USDT"), ("ETH", "ETH/USDT")):
        held = positions[pair].size if pair in positions else 0.0
        assert server.account.balances.get(asset, 0.0) == pytest.approx(held, abs=1e-12)
    assert server.account.balances["USDT"] == pytest.approx(store.cash(), abs=1e-6)
    exchange = make_exchange(ExchangeSettings(api_url=server.base_url, timeout_ms=3000), load_secrets(ENV))
    exchange.load_markets()
    result = reconcile(LiveExecutor(exchange, store), ("BTC/USDT", "ETH/USDT"))
    assert result.ok, result.why()


MARKET = ("BTC/USDT", "buy", "0.05")


@pytest.mark.parametrize("point", ["before_intent", "after_intent", "after_reply", "after_submitted"])
def test_a_crash_in_process_on_the_order_path(venue, tmp_path, point):
    store = tmp_path / "live.sqlite"
    killed(start(venue, store, *MARKET, failpoint=point))
    assert finished(start(venue, store, *MARKET)) == {"status": "filled"}
    check(venue, store, "filled")


def test_a_crash_between_two_fills(venue, tmp_path):
    store = tmp_path / "live.sqlite"
    venue.inject("/api/v3/order", "split", method="POST")
    killed(start(venue, store, *MARKET, failpoint="between_fills"))
    with PortfolioStore(store)._tx() as db:
        assert db.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == 1  # the first fill was recorded, whole
    assert finished(start(venue, store, *MARKET))["status"] == "filled"
    check(venue, store, "filled")


def test_a_crash_after_sending_before_the_reply(venue, tmp_path):
    store = tmp_path / "live.sqlite"
    venue.inject("/api/v3/order", "slow", method="POST", delay_s=10)  # accepted; the reply would take 10 s
    proc = start(venue, store, *MARKET)
    kill_when(proc, lambda: any(o.client_id == CID for o in venue.account.orders.values()))
    assert PortfolioStore(store).order(CID)["status"] == "new"  # the store never heard back
    assert finished(start(venue, store, *MARKET))["status"] == "filled"  # found by its client id, not resent
    check(venue, store, "filled")


def resting(venue):
    return (
        "ETH/USDT",
        "buy",
        "1.0",
        f"{venue.price_now('ETH/USDT') * 0.9:.2f}",
    )  # below the market: rests, then times out


def test_a_crash_after_the_cancel_was_sent(venue, tmp_path):
    store = tmp_path / "live.sqlite"
    killed(start(venue, store, *resting(venue), failpoint="after_cancel"))
    assert finished(start(venue, store, *resting(venue)))["status"] == "cancelled"
    check(venue, store, "cancelled")


def test_a_crash_while_the_cancel_is_on_its_way(venue, tmp_path):
    store = tmp_path / "live.sqlite"
    venue.inject("/api/v3/order", "slow", method="DELETE", delay_s=10)
    proc = start(venue, store, *resting(venue))
    kill_when(proc, lambda: any(o.client_id == CID and o.status == "CANCELED" for o in venue.account.orders.values()))
    assert finished(start(venue, store, *resting(venue)))["status"] == "cancelled"
    check(venue, store, "cancelled")


def test_a_crash_during_start_up_reconciliation(venue, tmp_path):
    store = tmp_path / "live.sqlite"
    killed(start(venue, store, *MARKET, failpoint="after_reply"))  # leaves an order of unknown outcome
    killed(start(venue, store, *MARKET, failpoint="mid_reconcile"))  # the restart dies resolving it
    assert finished(start(venue, store, *MARKET))["status"] == "filled"
    check(venue, store, "filled")
