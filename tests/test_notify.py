"""Alerts pushed (issue 26): `monitoring.notify` webhooks (a JSON POST) and Telegram chats (the Bot API's sendMessage)
receive a cycle's alerts from a local HTTP server on 127.0.0.1; a failing LLM that skips an entry is a warning; a
receiver that errs is retried; one that hangs never holds the cycle up. Paper cycles against the local exchange with
a really trained tiny model; the decision stage is replaced so that an entry is proposed (and reviewed) at once."""

from __future__ import annotations

import pandas as pd
import pytest
from local_hooks import LocalHooks
from local_llm import LocalLLM, Reply
from test_cycle import at, own_store, world  # noqa: F401  (world: the trained model and venue)

from morningstar_trader import kernel
from morningstar_trader.config import NotifyTarget, load_secrets
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.monitoring import Alert, Notifier, NotifyError
from morningstar_trader.types import Decision

SECRETS = {"MORNINGSTAR_LLM_API_KEY": "notify-llm-key", "MORNINGSTAR_TELEGRAM_TOKEN": "555:notify-token"}


def test_a_webhook_that_errs_is_retried_and_telegram_gets_the_bot_api_shape():
    with LocalHooks(fail_first=1) as hooks:
        n = Notifier(
            (
                NotifyTarget(kind="webhook", url=hooks.base_url + "/hook"),
                NotifyTarget(kind="telegram", chat_id="42", api_url=hooks.base_url, levels=("critical",)),
            ),
            SECRETS,
            pause_s=0.01,
        )
        alerts = [Alert("warning", "llm_outage", "timeout", "BTC/USDT"), Alert("critical", "halted", "drawdown")]
        assert n.send(alerts, "r1") == 3 and n.flush(30)
        assert len(n.delivered) == 3 and n.failed == [] and hooks.attempts == 4  # the 503 was tried again
        hook = sorted((r["json"] for r in hooks.received if r["path"] == "/hook"), key=lambda j: j["level"])
        assert [(j["level"], j["kind"], j["pair"], j["run"]) for j in hook] == [
            ("critical", "halted", None, "r1"),
            ("warning", "llm_outage", "BTC/USDT", "r1"),
        ]
        assert hook[1]["text"] == "[warning] llm_outage BTC/USDT: timeout (run r1)"
        (tg,) = [r for r in hooks.received if r["path"] != "/hook"]
        assert tg == {
            "path": "/bot555:notify-token/sendMessage",
            "json": {"chat_id": "42", "text": "[critical] halted: drawdown (run r1)"},
        }


@pytest.fixture
def failing_llm_cycle(world, tmp_path, monkeypatch):  # noqa: F811
    "A paper context whose LLM answers 500 and whose decision stage proposes a BTC entry; its alerts go to `hooks`."
    server, settings, data = world

    def decide(pair, pred, price, equity, position, **_):
        if pair != "BTC/USDT" or position is not None:
            return Decision(pair, "hold", reasons=("test",))
        return Decision(pair, "open_long", round(0.05 * equity / price, 4), price * 0.9, price * 1.2, ("test",))

    monkeypatch.setattr(kernel, "decide", decide)
    monkeypatch.setenv("MORNINGSTAR_TELEGRAM_TOKEN", SECRETS["MORNINGSTAR_TELEGRAM_TOKEN"])  # read where it is used
    with LocalLLM(Reply("the model is down", status=500)) as llm, LocalHooks(hold=True) as hooks:

        def context():
            s = own_store(settings, tmp_path)
            targets = (
                NotifyTarget(kind="webhook", url=hooks.base_url + "/hook", timeout_s=60),
                NotifyTarget(kind="telegram", chat_id="7", api_url=hooks.base_url, timeout_s=60),
            )
            s = s.model_copy(
                update={
                    "llm": s.llm.model_copy(
                        update={"mode": "live", "base_url": llm.base_url, "timeout_s": 5, "max_retries": 0}
                    ),
                    "monitoring": s.monitoring.model_copy(update={"notify": targets}),
                }
            )
            return build_context(s, load_secrets(SECRETS), run_id="notify")

        yield server, data, hooks, llm, context


def test_the_alerts_of_a_cycle_with_a_failing_llm_reach_the_webhook_and_telegram_without_holding_the_cycle_up(
    failing_llm_cycle,
):
    server, data, hooks, llm, context = failing_llm_cycle
    ctx = context()
    report = run_cycle(ctx, at(server, data["BTC/USDT"].index[1900] + pd.Timedelta(minutes=30)))
    assert llm.requests  # the entry was reviewed; the review failed
    outage = [a for a in report.snapshot.alerts if a.kind == "llm_outage"]
    assert [(a.level, a.pair) for a in outage] == [("warning", "BTC/USDT")] and "skip_entry" in outage[0].message
    assert report.pairs.set_index("pair").loc["BTC/USDT", "order"] == ""  # the failure policy skipped the entry
    # the receiver holds every request: the cycle returned all the same, nothing given up, nothing delivered yet
    assert hooks.waiting.wait(30) and ctx.notifier.delivered == [] and ctx.notifier.failed == []
    hooks.release.set()
    assert ctx.notifier.flush(30)
    pushed = {
        (r["path"].split("/")[-1], (r["json"].get("kind") or r["json"]["text"].split()[1])) for r in hooks.received
    }
    assert {("hook", "llm_outage"), ("sendMessage", "llm_outage")} <= pushed
    warning = next(r["json"] for r in hooks.received if r["path"] == "/hook" and r["json"]["kind"] == "llm_outage")
    assert warning["level"] == "warning" and warning["pair"] == "BTC/USDT" and warning["run"] == "notify"
    assert not any(SECRETS["MORNINGSTAR_TELEGRAM_TOKEN"] in str(r["json"]) for r in hooks.received)


def test_a_notify_target_whose_secret_is_missing_is_refused_at_start_up(world, tmp_path, monkeypatch):  # noqa: F811
    server, settings, data = world
    monkeypatch.delenv("MORNINGSTAR_TELEGRAM_TOKEN", raising=False)
    s = own_store(settings, tmp_path)
    s = s.model_copy(
        update={"monitoring": s.monitoring.model_copy(update={"notify": (NotifyTarget(kind="telegram", chat_id="7"),)})}
    )
    with pytest.raises(NotifyError, match="MORNINGSTAR_TELEGRAM_TOKEN"):
        build_context(s, load_secrets({}), run_id="notify", initial_cash=10_000.0)
