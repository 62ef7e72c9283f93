"""A hostile or broken LLM cannot crash a cycle or a backtest, nor churn the account (issue 16).

The replies go through the real `openai` client against `tests/local_llm.py`; the cycle runs against the local exchange
with a really trained tiny model, as in `tests/test_cycle.py`.
"""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from conftest import HOUR_MS, TINY, candles
from local_exchange import LocalExchange
from local_llm import LocalLLM, Reply

from morningstar_trader import kernel as kernel_module
from morningstar_trader.backtest import ModelStrategy, run_kernel_backtest
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import DecisionSettings, LlmSettings, Settings, load_secrets
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.decision import apply_review
from morningstar_trader.model import MorningstarModel
from morningstar_trader.supervisor import NO_REVIEW, ReviewRecord, ReviewRequest, Supervisor
from morningstar_trader.training import train_model
from morningstar_trader.types import TradeProposal

KEY = "sk-test-FAKE-0016"
GOOD = {
    "coherence": "agree",
    "risk_score": 0.3,
    "veto": False,
    "direction": "long",
    "size_multiplier": 0.8,
    "stop_loss": None,
    "take_profit": None,
    "rationale": "fine",
    "alerts": [],
}
# the reply of issue 16: 5x the size, a stop far below and a "target" far below the entry of a long near 230
ISSUE_REPLY = {
    "coherence": "agree",
    "risk_score": 0.1,
    "veto": False,
    "direction": "long",
    "size_multiplier": 5,
    "stop_loss": 0.5,
    "take_profit": 50.0,
    "rationale": "",
    "alerts": [],
}
BNB_LONG = TradeProposal("BNB/USDT", "long", 3.0, 230.0, 225.0, 236.0)


def request(proposal=BNB_LONG) -> ReviewRequest:
    return ReviewRequest(
        proposal,
        pd.Timestamp("2023-07-01 13:00", tz="UTC"),
        {"confidence": 0.6, "volatility": 0.004},
        {},
        {},
        fee=0.001,
        slippage=0.0002,
    )


@pytest.fixture
def llm():
    with LocalLLM() as server:
        yield server


def live(server, tmp_path, **changes) -> Supervisor:
    settings = LlmSettings(
        **{"mode": "live", "base_url": server.base_url, "model": "local-test", "timeout_s": 3.0, **changes}
    )
    return Supervisor.from_settings(settings, load_secrets({"MORNINGSTAR_LLM_API_KEY": KEY}), tmp_path)


def recorded(tmp_path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "llm_record.sqlite") as db:
        return db.execute("SELECT status, error, length(reply) FROM llm_exchanges ORDER BY id").fetchall()


# --- the listed repros: replies that used to raise out of Supervisor.review
# --------------------------------------------


def test_issue16_deeply_nested_reply_fails_the_review_instead_of_raising(llm, tmp_path):
    llm.script(Reply('{"a":' * 1000 + "{"))  # was a RecursionError in first_json_object
    review = live(llm, tmp_path).review(request())
    assert review.veto and review.size_multiplier == 0.0  # skip_entry
    assert "MAX_REPLY_BRACKETS" in review.failure and "1001 opening brackets" in review.failure
    assert recorded(tmp_path)[0][0] == "invalid"


def test_issue16_a_4306_digit_number_fails_the_review_instead_of_raising(llm, tmp_path):
    llm.script(Reply('{"risk_score": ' + "9" * 4306))  # was Python's int-conversion ValueError
    review = live(llm, tmp_path, failure_policy="reduce_size").review(request())
    assert "MAX_NUMBER_DIGITS" in review.failure and "4306 digits" in review.failure
    assert review.size_multiplier == 0.5 and not review.veto


def test_an_oversized_reply_fails_and_is_recorded_only_in_part(llm, tmp_path):
    llm.script(Reply(json.dumps({**GOOD, "rationale": "x" * 200_000})))
    review = live(llm, tmp_path).review(request())
    assert "MAX_REPLY_BYTES" in review.failure and review.veto
    status, error, stored = recorded(tmp_path)[0]
    assert status == "invalid" and stored == 16_384


def test_lone_surrogates_in_a_reply_are_stored_and_reported_not_raised(llm, tmp_path):
    # Found by the property test: the record (SQLite) refused the text and the review raised UnicodeEncodeError.
    llm.script(Reply("ok \ud800 " + json.dumps({**GOOD, "rationale": "\udfff why", "alerts": ["\ud83d"]})))
    review = live(llm, tmp_path).review(request())
    assert review.failure is None and review.rationale == "? why" and review.alerts == ("?",)
    assert recorded(tmp_path)[0][0] == "ok"


def test_issue16_the_hostile_reply_changes_nothing_on_a_bnb_long(llm, tmp_path):
    llm.script(Reply(json.dumps(ISSUE_REPLY)))
    review = live(llm, tmp_path).review(request())
    assert (review.size_multiplier, review.stop_loss, review.take_profit) == (1.0, None, None)
    assert apply_review(BNB_LONG, review, DecisionSettings()) == BNB_LONG
    text = " ".join(review.alerts)
    assert (
        "outside [0, 1]" in text
        and "away from the entry" in text
        and "take_profit 50 is not above the entry 230" in text
    )


def test_a_near_target_stays_outside_the_entry_bar_and_pays_its_costs(llm, tmp_path):
    llm.script(Reply(json.dumps({**GOOD, "size_multiplier": 1, "stop_loss": 229.9, "take_profit": 230.1})))
    review = live(llm, tmp_path).review(request())
    assert review.stop_loss == pytest.approx(227.5) and review.take_profit == pytest.approx(
        233.0
    )  # half the model's 5 and 6
    assert review.size_multiplier == pytest.approx((230 + 225 * (1 - 0.0002)) / (230 + 233))  # a moved exit costs size


# --- one pair's failure stays with that pair: the cycle and the backtest
# -------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    data = candles(2_000, end="2024-06-01")
    train = {
        p: validated_bars(df.iloc[:1700].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    result = train_model(Settings(**TINY), train, root / "models" / "default" / "v1", verbose=0)
    with LocalExchange(
        data, "1h", now_ms=int(data["BTC/USDT"].index[1799].timestamp() * 1000) + HOUR_MS // 2
    ) as server:
        settings = Settings(
            **TINY,
            mode="paper",
            pairs=("BTC/USDT", "ETH/USDT"),
            exchange={"api_url": server.base_url, "timeout_ms": 2000},
            retry={"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
            paths={"models_dir": root / "models", "state_dir": root / "state", "logs_dir": root / "logs"},
        )
        yield server, settings, data, MorningstarModel.load(result.path, settings)


class RaisingFor:
    "A supervisor whose review raises for one pair and approves the others' proposals unchanged."

    record = client = None

    def __init__(self, pair: str):
        self.pair, self.settings = pair, LlmSettings(mode="live")

    def review(self, request: ReviewRequest):
        if request.proposal.pair == self.pair:
            raise RuntimeError("the LLM client blew up")
        return NO_REVIEW


def decide_raising_for(pair: str, monkeypatch):
    "Make the kernel's `decide` raise for `pair` (as a malformed prediction or a bug would)."
    real = kernel_module.decide

    def decide(p, *args, **kwargs):
        if p == pair:
            raise ValueError("cannot convert float NaN to integer")
        return real(p, *args, **kwargs)

    monkeypatch.setattr(kernel_module, "decide", decide)


def cycles(world, tmp_path, run_id: str, supervisor=None, bars=range(1800, 1850)):
    server, settings, data, _ = world
    settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"state_dir": tmp_path})})
    ctx = build_context(settings, load_secrets({}), run_id=run_id)
    if supervisor is not None:
        ctx.supervisor = supervisor
    reports = []
    for k in bars:
        now = data["BTC/USDT"].index[k] + pd.Timedelta(minutes=30)
        server.set_now(int(now.timestamp() * 1000))
        reports.append(run_cycle(ctx, now))
    return ctx, reports


def test_a_raising_review_costs_only_its_pair_in_the_cycle(world, tmp_path):
    ctx, reports = cycles(world, tmp_path, "guard-review", RaisingFor("BTC/USDT"))
    orders = ctx.store.orders()
    assert (orders["pair"] == "ETH/USDT").any() and not (orders["pair"] == "BTC/USDT").any()  # skip_entry for BTC only
    rows = pd.concat(r.pairs for r in reports)
    btc = rows[rows["pair"] == "BTC/USDT"]
    assert "skipped" not in set(rows["action"])
    assert btc["reasons"].str.contains("failed: the reviewer raised RuntimeError: the LLM client blew up").any()
    alerts = [a for r in reports for a in r.snapshot.alerts if a.kind == "llm_outage"]  # a warning, pushed (issue 26)
    assert alerts and all(a.pair == "BTC/USDT" and "llm.failure_policy skip_entry" in a.message for a in alerts)
    assert all(a.level == "warning" for a in alerts)
    with sqlite3.connect(ctx.store.path) as db:
        journaled = [r for (r,) in db.execute("SELECT reasons FROM journal WHERE pair = 'BTC/USDT'")]
    assert any("the reviewer raised RuntimeError" in r for r in journaled)


def test_a_raising_decision_costs_only_its_pair_in_the_cycle(world, tmp_path, monkeypatch):
    decide_raising_for("BTC/USDT", monkeypatch)
    ctx, reports = cycles(world, tmp_path, "guard-decide")
    orders = ctx.store.orders()
    assert (orders["pair"] == "ETH/USDT").any() and not (orders["pair"] == "BTC/USDT").any()
    for r in reports:
        btc = r.pairs.set_index("pair").loc["BTC/USDT"]
        assert btc["action"] == "skipped" and btc["reasons"].startswith(
            "decision: ValueError: cannot convert float NaN"
        )
        assert [(a.kind, a.pair) for a in r.snapshot.alerts if a.kind == "error"] == [("error", "BTC/USDT")]


def backtest(world, supervisor=None, **settings_update):
    _, settings, data, model = world
    frames = {p: df.iloc[1000:] for p, df in data.items()}
    s = Settings(**TINY).model_copy(update=settings_update)
    return run_kernel_backtest(
        frames, ModelStrategy(model, s.decision.min_confidence), s, supervisor=supervisor, cash=10_000
    )


def test_a_raising_review_costs_only_its_pair_in_a_backtest(world):
    res = backtest(world, RaisingFor("BTC/USDT"))
    assert set(res.trades["pair"]) == {"ETH/USDT"}
    btc = res.decisions[res.decisions["pair"] == "BTC/USDT"]
    assert btc["reasons"].str.contains("failed: the reviewer raised RuntimeError").any()


def test_a_raising_decision_costs_only_its_pair_in_a_backtest(world, monkeypatch):
    decide_raising_for("BTC/USDT", monkeypatch)
    res = backtest(world)
    assert set(res.trades["pair"]) == {"ETH/USDT"}
    btc = res.decisions[res.decisions["pair"] == "BTC/USDT"]
    assert (
        len(btc) and btc["reasons"].str.startswith("decision: ValueError").all() and set(btc["action"]) == {"skipped"}
    )
    errors = res.errors  # the run notebook's errors scrap (issue 26): per close, pair and stage
    assert len(errors) and set(errors["pair"]) == {"BTC/USDT"} and set(errors["stage"]) == {"decision"}
    assert set(errors["time"]) == set(btc["time"])


def totals(res) -> dict:
    t = res.trades
    return {
        "trades": len(t),
        "fees": t["fees"].sum(),
        "turnover": (t["size"] * (t["entry_price"] + t["exit_price"])).sum(),
    }


def test_issue16_the_hostile_reply_cannot_churn_a_backtest(world, tmp_path):
    # BNB/USDT Jun-Aug 2023 went from 75 trades to 287 with this reply; here on synthetic candles, through the real
    # client.
    with LocalLLM(default=Reply(json.dumps(ISSUE_REPLY))) as server:
        hostile = totals(backtest(world, live(server, tmp_path)))
        asked = len(server.requests)
    plain = totals(backtest(world))
    assert asked > 5 and plain["trades"] > 5
    assert hostile == pytest.approx(plain, rel=1e-12)  # every field of the reply is dropped


class Tightest:
    "An LlmClient that asks for the stop and the target 0.01 % from the entry at full size: the churn of issue 16."

    def complete(self, messages):
        from morningstar_trader.supervisor import Completion

        user = messages[1]["content"]
        p = json.loads(user[user.index("Proposal:") + len("Proposal:") : user.index("Model outputs")])
        sign, e = (1 if p["side"] == "long" else -1), p["entry_price"]
        reply = {
            **GOOD,
            "direction": p["side"],
            "size_multiplier": 1,
            "stop_loss": e * (1 - sign * 1e-4),
            "take_profit": e * (1 + sign * 1e-4),
        }
        return Completion(json.dumps(reply), 1.0, 100, 40)


def test_issue16_the_tightest_levels_cannot_add_trades_or_fees(world, tmp_path):
    tight = Supervisor(LlmSettings(mode="live"), ReviewRecord(tmp_path / "r.sqlite"), Tightest())
    res = backtest(world, tight)
    got, plain = totals(res), totals(backtest(world))
    assert res.decisions["reasons"].str.contains(r"size x0\.9").any()  # levels moved (to the floor): size paid for it
    assert got["trades"] <= plain["trades"] and got["fees"] <= plain["fees"] and got["turnover"] <= plain["turnover"]
