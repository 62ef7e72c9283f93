"""Several strategies on one exchange account, live against the local exchange (real ccxt over HTTP): each with its own
store, client-id namespace and share of the cash; the account's exposure limit across them; balances that reconcile
per strategy and in total."""

from __future__ import annotations

import pandas as pd
import pytest
from artifact_kit import SETTINGS, tiny_artifact
from conftest import HOUR_MS, TINY, candles
from local_exchange import LocalExchange

from morningstar_trader.config import Settings, for_strategy, load_secrets
from morningstar_trader.cycle import build_context, run_cycle

KEYS = {"MORNINGSTAR_EXCHANGE_API_KEY": "strategies-key", "MORNINGSTAR_EXCHANGE_SECRET": "strategies-secret"}


def _account(server, root, mode: str) -> Settings:
    return Settings(
        **TINY,
        mode=mode,
        pairs=("BTC/USDT", "ETH/USDT"),
        exchange={"api_url": server.base_url, "timeout_ms": 2000},
        retry={"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
        paths={"models_dir": root / "models", "state_dir": root / "state", "logs_dir": root / "logs"},
        account={"max_total_exposure": 0.4},
        strategies=[
            {"name": "both", "capital": 0.5, "risk": {"max_total_exposure": 1.0}},
            {"name": "btc", "pairs": ["BTC/USDT"], "capital": 0.3},
        ],
    )


def always_buy():
    "The tiny network with its signal head fixed on `buy` (confidence 0.995): every strategy wants in at every close."
    import numpy as np

    from morningstar_trader.features import DataPreparation
    from morningstar_trader.model import EnhancedHybridModel

    prep = DataPreparation(SETTINGS.features, SETTINGS.timeframe)
    net = EnhancedHybridModel(
        prep.settings.window, len(prep.technical_names), len(prep.context_names), SETTINGS.model
    ).build(seed=1)
    kernel, _ = net.get_layer("signal").get_weights()
    net.get_layer("signal").set_weights([np.zeros_like(kernel), np.array([0.0, 0.0, 6.0], np.float32)])
    return net


@pytest.fixture()
def exchange(tmp_path):
    data = candles(2_000, end="2024-06-01")
    tiny_artifact(tmp_path / "models" / "default" / "v1", always_buy())
    with LocalExchange(
        data, "1h", now_ms=int(data["BTC/USDT"].index[1954].timestamp() * 1000) + HOUR_MS // 2
    ) as server:
        yield server, data, tmp_path


def _cycles(server, data, contexts, bars) -> list:
    reports = []
    for k in bars:
        now = data["BTC/USDT"].index[k] + pd.Timedelta(seconds=1)
        server.set_now(int(now.timestamp() * 1000))
        for ctx in contexts.values():
            reports.append(report := run_cycle(ctx, now))
            assert "refused" not in {a.kind for a in report.snapshot.alerts}, report.snapshot.alerts
    return reports


def test_two_live_strategies_trade_the_same_pair_on_one_account(exchange):
    server, data, root = exchange
    account = _account(server, root, "live")
    start = server.account.balances["USDT"]
    contexts = {
        n: build_context(
            for_strategy(account, n),
            load_secrets(KEYS),
            run_id=f"live-{n}",
            confirm_live=True,
            allow_unproven_model=True,
        )
        for n in ("both", "btc")
    }
    assert [c.store.cash() for c in contexts.values()] == [0.5 * start, 0.3 * start]  # each its share of the account
    assert len({c.account for c in contexts.values()}) == 2
    reports = _cycles(server, data, contexts, range(1955, 1975))
    stores = {n: c.store for n, c in contexts.items()}
    ids = {n: set(s.orders()["client_order_id"]) for n, s in stores.items()}
    assert ids["both"] and ids["btc"] and not ids["both"] & ids["btc"]  # no client-id collision
    assert all("BTC/USDT" in set(s.orders()["pair"]) for s in stores.values())  # both traded the same pair
    assert {o.client_id for o in server.account.orders.values()} == ids["both"] | ids[
        "btc"
    ]  # one venue order per intent
    assert not any((s.orders()["intent"] == "external").any() for s in stores.values())  # the other's are not external
    held = lambda s, pair: s.positions()[pair].size if pair in s.positions() else 0.0
    assert server.account.balances.get("BTC", 0.0) == pytest.approx(
        held(stores["both"], "BTC/USDT") + held(stores["btc"], "BTC/USDT"), abs=1e-9
    )
    assert server.account.balances.get("ETH", 0.0) == pytest.approx(held(stores["both"], "ETH/USDT"), abs=1e-9)
    unallocated = 0.2 * start  # no strategy's share
    assert server.account.balances["USDT"] == pytest.approx(
        unallocated + sum(s.cash() for s in stores.values()), abs=1e-6
    )
    verdicts = pd.concat([r.pairs for r in reports])["verdict"]
    assert verdicts.str.contains("across strategies").any(), (
        verdicts.value_counts()
    )  # account.max_total_exposure 0.4 held entries back


def test_a_paper_strategy_starts_with_its_share_and_its_own_store(exchange):
    server, data, root = exchange
    account = _account(server, root, "paper")
    ctx = build_context(for_strategy(account, "btc"), load_secrets({}), run_id="paper-btc", initial_cash=10_000.0)
    assert ctx.store.cash() == pytest.approx(3_000.0) and ctx.store.path == root / "state" / "btc" / "paper.sqlite"
    report = _cycles(server, data, {"btc": ctx}, [1955])[0]
    assert list(report.pairs["pair"]) == ["BTC/USDT"]
