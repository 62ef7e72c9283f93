"""One kernel for every mode, proven: paper cycles (`run_cycle`, the real ccxt client against the local exchange serving
the bars one close at a time) and `run_kernel_backtest` over the same bars, with the same model, settings and reviewer,
make the same decisions, orders, fills and equity. A second run records real LLM reviews (the openai client against the
local server) during the paper cycles and replays them in the backtest with no LLM call at all."""

from __future__ import annotations

import difflib
import re

import pandas as pd
import pytest
from conftest import HOUR_MS, TINY, candles
from local_exchange import LocalExchange
from local_llm import LocalLLM, Reply

from morningstar_trader.alt_providers import AltStore
from morningstar_trader.backtest import ModelStrategy, run_kernel_backtest
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import Settings, load_secrets
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.portfolio import PortfolioStore
from morningstar_trader.sample_data import write_sample_alt
from morningstar_trader.supervisor import ReviewRecord, Supervisor
from morningstar_trader.training import train_model

CYCLES, FIRST = 200, 1_600  # paper cycle k decides on bar k - 1, the newest closed one
PAIRS = ("BTC/USDT", "ETH/USDT")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    data = candles(FIRST + CYCLES + 1, end="2024-06-01", seed=3)
    train = {
        p: validated_bars(df.iloc[:1_400].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    settings = Settings(
        **{**TINY, "pairs": PAIRS, "risk": {"max_position_fraction": 0.3, "cooldown_bars": 2, "max_open_positions": 2}}
    )
    train_model(settings, train, root / "models" / "default" / "v1", verbose=0)
    # alternative data for the market digest: the paper cycles and the backtest attach it to every review
    write_sample_alt(AltStore(root / "data"), {p: df.reset_index(names="timestamp") for p, df in data.items()})
    return root, data, settings


def _paper(root, data, settings, state: str, llm: dict) -> tuple:
    """CYCLES paper cycles through ccxt, the exchange's clock half-way into each bar; (context, settings)."""
    index = data["BTC/USDT"].index.union(data["ETH/USDT"].index)
    with LocalExchange(data, "1h", now_ms=int(index[FIRST - 1].timestamp() * 1000) + HOUR_MS // 2) as server:
        s = Settings(
            **{
                **settings.model_dump(),
                "mode": "paper",
                "llm": llm,
                "exchange": {"api_url": server.base_url, "timeout_ms": 2000, "enable_rate_limit": False},
                "retry": {"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
                "paths": {
                    "models_dir": root / "models",
                    "state_dir": root / state,
                    "logs_dir": root / "logs",
                    "data_dir": root / "data",
                },
            }
        )
        env = {"MORNINGSTAR_LLM_API_KEY": "parity-key"} if llm.get("mode") == "live" else {}
        ctx = build_context(s, load_secrets(env), run_id="parity")
        for k in range(FIRST, FIRST + CYCLES):
            now = index[k] + pd.Timedelta(minutes=30)
            server.set_now(int(now.timestamp() * 1000))
            run_cycle(ctx, now)
    return ctx, s


def _backtest(ctx, s, data, supervisor, path):
    index = data["BTC/USDT"].index.union(data["ETH/USDT"].index)
    last = index[FIRST + CYCLES - 2]  # the bar the last paper cycle decided on
    frames = {p: df.loc[:last] for p, df in data.items()}
    store = PortfolioStore(path, initial_cash=10_000.0)
    res = run_kernel_backtest(
        frames,
        ModelStrategy(ctx.model, s.decision.min_confidence),
        s,
        supervisor=supervisor,
        store=store,
        markets=ctx.markets,
        account=ctx.account,
        start=index[FIRST - 1],
        cash=10_000.0,
    )
    return res, store


def _num(text: str) -> str:
    """Numbers in a verdict to 4 significant digits: float noise between batch and per-bar inference is not a difference
    (a calibrated head's temperature scales it; the sizes themselves are compared to rtol 1e-6 below)."""
    return re.sub(r"\d+\.\d+(e-?\d+)?", lambda m: f"{float(m[0]):.4g}", text)


def _decisions(rows) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "time": r["time"],
                "pair": r["pair"],
                "action": r["decision"]["action"],
                "size": r["decision"]["size"],
                "stop_loss": r["decision"]["stop_loss"],
                "take_profit": r["decision"]["take_profit"],
                "verdict": _num(r["decision"]["verdict"]),
                "order": r["decision"]["order"],
                "review": (r["decision"]["review"] or {}).get("coherence"),
            }
            for r in rows
        ]
    ).sort_values(["time", "pair"], ignore_index=True)


def _assert_same_run(ctx, res, store, missing: int = 0):
    paper, bt = _decisions(ctx.store.journal_rows()), _decisions(store.journal_rows())
    reasons = pd.Series([r["reasons"][0] for r in ctx.store.journal_rows()]).str.replace(r"[\d.]+", "#", regex=True)
    assert len(paper) == 2 * CYCLES - missing and (paper["action"] != "hold").sum() >= 10, (
        reasons.value_counts()
    )  # it did trade
    pd.testing.assert_frame_equal(
        paper.drop(columns=["size", "stop_loss", "take_profit"]),
        bt.drop(columns=["size", "stop_loss", "take_profit"]),
        check_exact=True,
    )
    pd.testing.assert_frame_equal(
        paper[["size", "stop_loss", "take_profit"]],
        bt[["size", "stop_loss", "take_profit"]],
        check_exact=False,
        rtol=1e-6,
    )
    cols = ["client_order_id", "pair", "side", "type", "intent"]
    po, bo = ctx.store.orders(), store.orders()
    bo = bo[bo["intent"] != "end"]
    assert len(po) >= 20
    pd.testing.assert_frame_equal(
        po[cols].sort_values(cols, ignore_index=True), bo[cols].sort_values(cols, ignore_index=True)
    )
    pending = set(po.loc[po["status"] != "filled", "client_order_id"])  # decided at the last close: not filled yet
    assert (bo.set_index("client_order_id").loc[sorted(pending), "status"] == "cancelled").all()
    pf, bf = ctx.store.fills(), store.fills()
    bf = bf[~bf["client_order_id"].isin(bo_end := set(store.orders().query("intent == 'end'")["client_order_id"]))]
    assert not bo_end & set(pf["client_order_id"])
    pd.testing.assert_frame_equal(
        pf.drop(columns=["amount", "fee", "realized_pnl"]), bf.drop(columns=["amount", "fee", "realized_pnl"])
    )
    pd.testing.assert_frame_equal(pf[["amount", "fee"]], bf[["amount", "fee"]], check_exact=False, rtol=1e-6, atol=1e-9)
    # a trade closed near break-even: its P&L is a difference of two near-equal values, so the sizes' float noise
    # (rtol 1e-6 above) shows in it at ~1e-6 of a quote unit, however small the P&L itself
    pd.testing.assert_series_equal(pf["realized_pnl"], bf["realized_pnl"], check_exact=False, rtol=1e-6, atol=1e-5)
    paper_equity = ctx.store.equity_curve()["equity"].to_numpy()
    assert len(paper_equity) == CYCLES
    assert paper_equity[:-1] == pytest.approx(res.equity.to_numpy()[:-1], rel=1e-8)


def test_paper_cycles_and_the_backtest_make_the_same_decisions_orders_fills_and_equity(world, tmp_path):
    root, data, settings = world
    ctx, s = _paper(root, data, settings, "state-off", {"mode": "off"})
    res, store = _backtest(ctx, s, data, Supervisor(s.llm), tmp_path / "bt.sqlite")
    _assert_same_run(ctx, res, store)


def test_reviews_recorded_in_paper_replay_in_the_backtest_without_an_llm_call(world, tmp_path):
    root, data, settings = world
    # one reply that is both a valid review and a valid market digest (each schema ignores the other's fields)
    agree = (
        '{"coherence": "agree", "risk_score": 0.2, "veto": false, "direction": "%s", "size_multiplier": 0.5, '
        '"stop_loss": null, "take_profit": null, "rationale": "fine", "sentiment": {"BTC": 0.3, "ETH": -0.2}, '
        '"key_events": ["calm"], "risk_flags": []}'
    )
    with LocalLLM(Reply(agree % "long")) as llm:
        ctx, s = _paper(
            root,
            data,
            settings,
            "state-llm",
            {"mode": "live", "base_url": llm.base_url, "model": "local-test", "timeout_s": 5},
        )
        calls = len(llm.requests)
        prompts = [r["messages"][-1]["content"] for r in llm.requests]
        digests = sum("MarketDigest" in r["messages"][0]["content"] for r in llm.requests)
        assert digests >= 5 and sum('source="market_digest"' in p for p in prompts) >= 5  # reviews read the digest
        record = ReviewRecord(root / "state-llm" / "llm_record.sqlite")
        recorded = record.stats()["exchanges"]
        assert recorded >= 5
        replay = Supervisor(s.llm.model_copy(update={"mode": "replay"}), record)
        res, store = _backtest(ctx, s, data, replay, tmp_path / "bt.sqlite")
        assert record.stats()["exchanges"] == recorded  # the backtest asked nothing
        assert len(llm.requests) == calls
    _assert_same_run(ctx, res, store)
    # asked live, the backtest sends the LLM the very prompts the paper cycles sent: digests and reviews alike
    with LocalLLM(Reply(agree % "long")) as again:
        live = Supervisor.from_settings(
            s.llm.model_copy(update={"base_url": again.base_url}),
            load_secrets({"MORNINGSTAR_LLM_API_KEY": "parity-key"}),
            tmp_path,
        )
        _backtest(ctx, s, data, live, tmp_path / "bt-live.sqlite")
        sent = sorted(_num(r["messages"][-1]["content"]) for r in again.requests)
    assert len(sent) == len(prompts)
    diff = next(
        (
            list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=1))
            for a, b in zip(sent, sorted(map(_num, prompts)))
            if a != b
        ),
        [],
    )
    assert diff == [], "\n".join(diff)
    reviews = _decisions(store.journal_rows())["review"].dropna()
    assert len(reviews) >= 5 and set(reviews) == {"agree"}  # replayed, not failed


def test_a_rule_trades_the_same_in_paper_cycles_and_the_backtest(world, tmp_path):
    """A rule in the model's place (`rule: sma_cross`): paper cycles (no model on disk is read) and the backtest of the
    same bars make the same decisions, orders, fills and equity."""
    root, data, settings = world
    rule = Settings(**{**settings.model_dump(), "rule": {"name": "sma_cross", "fast": 5, "slow": 20}})
    ctx, s = _paper(root, data, rule, "state-rule", {"mode": "off"})
    assert ctx.model.path == "rule sma_cross (fast 5, slow 20)"
    res, store = _backtest(ctx, s, data, Supervisor(s.llm), tmp_path / "bt.sqlite")
    _assert_same_run(ctx, res, store)
    assert {"open_long", "close"} <= set(_decisions(ctx.store.journal_rows())["action"])  # spot: no shorts


def test_a_missing_candle_is_carried_over_and_the_pair_decided_again_at_the_next_close_in_paper_and_backtest(
    world, tmp_path
):
    """Candles missing mid-run (the exchange never had them: an outage), up to `features.max_gap_bars` of them: at the
    close that lacks its candle the pair is skipped with the reason; at the next close it is decided again (the gap
    carried over, not a new warm-up), the same in paper and in the backtest."""
    root, data, settings = world
    index = data["BTC/USDT"].index
    gapped = {
        "BTC/USDT": data["BTC/USDT"].drop(index[FIRST + 60]),
        "ETH/USDT": data["ETH/USDT"].drop(index[FIRST + 100 : FIRST + 103]),
    }
    ctx, s = _paper(root, gapped, settings, "state-gap", {"mode": "off"})
    res, store = _backtest(ctx, s, gapped, Supervisor(s.llm), tmp_path / "bt.sqlite")
    _assert_same_run(ctx, res, store, missing=4)
    journal = _decisions(ctx.store.journal_rows())
    for pair, after in (("BTC/USDT", index[FIRST + 61]), ("ETH/USDT", index[FIRST + 103])):
        row = journal[(journal["pair"] == pair) & (journal["time"] == after)]
        assert len(row) == 1 and row["action"].iloc[0] != "skipped", row  # decided at the first close after the gap
