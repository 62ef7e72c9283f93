"""Whole live cycles killed with SIGKILL (issue 26): `morningstar run --mode live` as a user starts it (papermill, a
real kernel, the client ids the kernel derives), against the local venue on the real clock, trading the `buy_hold` rule
(it enters every pair it does not hold, with a stop). The kernel's process kills itself at a failpoint
(MORNINGSTAR_FAILPOINT reaches it through the environment), then the run is started again. Afterwards the venue has
one order per intent, each position's stop rests there once, and the store agrees with the venue: every order in the
same state, the fills are the venue's trades, balances match (reconciliation is ok), no orphan order."""

from __future__ import annotations

from bisect import bisect_right

import pandas as pd
import pytest
import yaml
from conftest import ROOT, Project, candles
from local_exchange import LocalExchange

from morningstar_trader.config import ExchangeSettings, load_secrets
from morningstar_trader.live_execution import LiveExecutor, reconcile
from morningstar_trader.market_data import make_exchange
from morningstar_trader.portfolio import PortfolioStore
from morningstar_trader.runs import load_run

NOTEBOOK = str(ROOT / "nbs" / "trading_cycle.ipynb")
KEYS = {"MORNINGSTAR_EXCHANGE_API_KEY": "cycle-crash-key", "MORNINGSTAR_EXCHANGE_SECRET": "cycle-crash-secret"}
PAIRS = ("BTC/USDT", "ETH/USDT")
LIVE = ("run", "--mode", "live", "--i-understand-this-trades-real-money", "--allow-unproven-model")
STATUS = {
    "NEW": "submitted",
    "FILLED": "filled",
    "CANCELED": "cancelled",
    "EXPIRED": "cancelled",
    "PARTIALLY_FILLED": "partially_filled",
}


@pytest.fixture
def live(tmp_path):
    forming = pd.Timestamp.now(tz="UTC").floor("h")
    data = candles(400, end=str(forming + pd.Timedelta(hours=4)))  # room for the clock and a crash candle ahead
    with LocalExchange(data, "1h", balances={"USDT": 100_000.0}) as server:  # the real clock
        config = {
            "mode": "live",
            "pairs": list(PAIRS),
            "timeframe": "1h",
            "rule": {"name": "buy_hold"},
            "llm": {"mode": "off"},
            "exchange": {"api_url": server.base_url, "timeout_ms": 2000},
            "retry": {"max_attempts": 2, "initial_delay_s": 0.05, "max_delay_s": 0.1},
            "live": {"shadow": False},
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        project = Project(tmp_path, tmp_path / "config.yaml")
        project.exchange, project.candles = server, data
        yield project


def run(project, failpoint: str = ""):
    "One live run; killed (a failed run) when `failpoint` names where its kernel SIGKILLs itself."
    proc = project.run(*LIVE, "--notebook", NOTEBOOK, env={**KEYS, "MORNINGSTAR_FAILPOINT": failpoint}, check=None)
    assert (proc.returncode != 0) == bool(failpoint), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def store(project) -> PortfolioStore:
    return PortfolioStore(project.root / "state" / "live.sqlite")


def agrees(project, resting_types=("STOP_LOSS_LIMIT",)):
    """One venue order per client id, each the store's in the same state; fills = trades; balances agree; no orphan:
    what rests is one order of each of `resting_types` per held position."""
    server, book = project.exchange, store(project)
    orders = list(server.account.orders.values())
    assert len({o.client_id for o in orders}) == len(orders), [o.client_id for o in orders]
    assert {o.client_id: STATUS[o.status] for o in orders} == {
        o.client_id: book.order(o.client_id)["status"] for o in orders
    }
    pair_of = {o.id: f"{o.symbol[:3]}/USDT" for o in orders}
    assert set(book.fills()["trade_id"]) == {f"{pair_of[t['orderId']]}:{t['id']}" for t in server.account.trades}
    resting = sorted((f"{o.symbol[:3]}/USDT", o.type) for o in orders if o.status == "NEW")
    assert resting == sorted((p, t) for p in book.positions() for t in resting_types)  # nothing else left open
    exchange = make_exchange(ExchangeSettings(api_url=server.base_url, timeout_ms=3000), load_secrets(KEYS))
    exchange.load_markets()
    result = reconcile(LiveExecutor(exchange, book), PAIRS)
    assert result.ok, result.why()


def test_killed_right_after_an_entry_filled_the_restart_puts_its_stop_at_the_venue_once_and_a_crash_triggers_it(live):
    server = live.exchange
    run(live, "after_entry")  # the BTC entry filled; the process dies before its stop is sent
    (entry,) = server.account.orders.values()
    assert (entry.symbol, entry.side, entry.status) == ("BTCUSDT", "BUY", "FILLED")
    assert store(live).order(entry.client_id)["status"] == "filled" and "BTC/USDT" in store(live).positions()
    scraps = load_run(run(live).stdout.split()[1].rstrip(":"), live.root / "runs")  # the restart: the stop goes out
    stops = {o.symbol: o for o in server.account.orders.values() if o.type == "STOP_LOSS_LIMIT"}
    assert sorted(stops) == ["BTCUSDT", "ETHUSDT"] and {o.status for o in stops.values()} == {"NEW"}
    btc = stops["BTCUSDT"]
    assert btc.stop == pytest.approx(store(live).positions()["BTC/USDT"].stop_loss)
    agrees(live)
    # the run notebook is the audit record: every head per pair, every order touched, every fill, errors by stage
    assert set(scraps["predictions"]["pair"]) == set(PAIRS)
    assert {"action", "confidence", "volatility"} <= set(scraps["predictions"].columns)
    touched = set(zip(scraps["orders"]["pair"], scraps["orders"]["intent"]))
    assert {("BTC/USDT", "protect"), ("ETH/USDT", "open"), ("ETH/USDT", "protect")} <= touched
    assert list(scraps["fills"]["pair"]) == ["ETH/USDT"] and scraps["stats"]["fills"] == 1  # BTC's: the killed run's
    assert scraps["errors"] == [] and "reviews" in scraps and scraps["digests"] == {}
    crashed = {p: df.copy() for p, df in live.candles.items()}
    opens = crashed["BTC/USDT"].index
    nxt = bisect_right(opens.as_unit("ms").asi8, btc.time)  # the first candle that opened after the stop was placed
    crashed["BTC/USDT"].iloc[nxt, crashed["BTC/USDT"].columns.get_loc("low")] = btc.stop * 0.8
    server.set_candles(crashed)
    server.set_now(int(opens[nxt + 1].timestamp() * 1000) + 1000)  # the crash candle has closed
    scraps = load_run(run(live).stdout.split()[1].rstrip(":"), live.root / "runs")  # the venue's stop sold
    assert btc.status == "FILLED" and store(live).order(btc.client_id)["status"] == "filled"
    (fill,) = store(live).fills(btc.client_id).itertuples()
    assert fill.price == pytest.approx(btc.stop) and fill.side == "sell"
    assert btc.client_id in set(scraps["fills"]["client_order_id"])  # the fill the cycle learned from the venue
    agrees(live)


def test_a_live_run_killed_after_the_venue_accepted_its_order_sends_one_order_per_intent(live):
    server = live.exchange
    run(live, "after_reply")  # the venue accepted (and filled) the BTC entry; the store never heard back
    (entry,) = server.account.orders.values()
    assert entry.status == "FILLED" and store(live).order(entry.client_id)["status"] == "new"
    run(live)  # the same close again: the kernel derives the same client id and finds the order
    entries = [o for o in server.account.orders.values() if o.type == "MARKET"]
    assert sorted((o.symbol, o.side) for o in entries) == [("BTCUSDT", "BUY"), ("ETHUSDT", "BUY")]
    assert store(live).order(entry.client_id)["status"] == "filled"
    agrees(live)


def test_a_live_run_killed_after_the_venue_accepted_an_oco_list_finds_both_legs_and_sends_no_second_list(live):
    server = live.exchange
    server.oco_allowed = True  # the venue offers OCO lists: each position's stop and target rest as one
    run(live, "after_list_reply")  # the BTC entry filled, the venue accepted its list; the store never heard back
    legs = [o for o in server.account.orders.values() if o.list_id != -1]
    assert sorted(o.type for o in legs) == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"] and {o.status for o in legs} == {"NEW"}
    assert {store(live).order(o.client_id)["status"] for o in legs} == {"new"}  # both intents were stored first
    run(live)  # the restart looks both legs up by client id: found, and no second list for BTC
    lists = {}
    for o in server.account.orders.values():
        if o.list_id != -1:
            lists.setdefault(o.symbol, set()).add(o.list_id)
    assert {s: len(ids) for s, ids in lists.items()} == {"BTCUSDT": 1, "ETHUSDT": 1}
    assert {store(live).order(o.client_id)["intent"] for o in legs} == {"protect", "protect_target"}
    agrees(live, resting_types=("LIMIT_MAKER", "STOP_LOSS_LIMIT"))
