"""Paper trading cycles against the local exchange (real ccxt over HTTP) with a really trained tiny model."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from conftest import HOUR_MS, TINY, candles

KEYS = {"MORNINGSTAR_EXCHANGE_API_KEY": "cycle-key", "MORNINGSTAR_EXCHANGE_SECRET": "cycle-secret"}
from local_exchange import LocalExchange

from morningstar_trader.candles import validated_bars
from morningstar_trader.config import Settings, load_secrets
from morningstar_trader.cycle import CycleError, build_context, run_cycle
from morningstar_trader.execution import PROTECTIVE
from morningstar_trader.training import train_model


def own_store(settings, state_dir, **update):
    "The world's settings with a state store of its own (and `update`)."
    return settings.model_copy(update={"paths": settings.paths.model_copy(update={"state_dir": state_dir}), **update})


def at(server, now):
    "Set the exchange's clock to `now`; returns it."
    server.set_now(int(now.timestamp() * 1000))
    return now


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    data = candles(2_000, end="2024-06-01")
    train = {
        p: validated_bars(df.iloc[:1700].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    train_model(Settings(**TINY), train, root / "models" / "default" / "v1", verbose=0)
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
        yield server, settings, data


def test_paper_cycles_fill_at_the_next_open_and_never_double_submit(world):
    server, settings, data = world
    ctx = build_context(settings, load_secrets({}), run_id="paper-test")
    opens = {p: df["open"] for p, df in data.items()}
    reports = []
    for k in range(1800, 1860):
        now = at(
            server, data["BTC/USDT"].index[k] + pd.Timedelta(minutes=30)
        )  # half-way into bar k: bar k-1 is the newest closed
        reports.append(run_cycle(ctx, now))
        if k == 1830:  # the same bar again (a retry): nothing new is sent
            before = len(ctx.store.orders())
            run_cycle(ctx, now)
            assert len(ctx.store.orders()) == before
        if k == 1845:  # ... nor by the next scheduled run: a new process, a new run id
            before = ctx.store.orders()
            again = run_cycle(build_context(settings, load_secrets({}), run_id="paper-test-restarted"), now)
            pd.testing.assert_frame_equal(ctx.store.orders(), before)
            assert set(again.pairs["order"]) <= set(before["client_order_id"]) | {""}
    assert all(r.bar == data["BTC/USDT"].index[1799 + i] for i, r in enumerate(reports))
    every = ctx.store.orders()
    orders = every[~every["intent"].isin(PROTECTIVE)]  # the positions' resting stops and targets: below
    assert (
        len(orders) > 0 and (orders["status"] == "filled").sum() >= len(orders) - 2
    )  # the newest may still be pending
    resting = every[every["intent"].isin(PROTECTIVE)]  # paper records them as live places them; they never fill
    assert (
        set(resting["status"]) <= {"submitted", "cancelled"}
        and not resting["client_order_id"].isin(ctx.store.fills()["client_order_id"]).any()
    )
    held = {p: pos for p, pos in ctx.store.positions().items()}
    still = resting[resting["status"] == "submitted"]
    assert sorted(still["pair"]) == sorted(
        p for p, pos in held.items() for lv in (pos.stop_loss, pos.take_profit) if lv
    )
    with sqlite3.connect(settings.paths.state_dir / "paper.sqlite") as db:
        fills = pd.read_sql("SELECT f.*, o.note, o.intent FROM fills f JOIN orders o USING (client_order_id)", db)
        journal = db.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    assert journal == 2 * 60 + 2  # one row per cycle and pair (+ the restarted run's)
    monitoring = ctx.monitor.frame()
    assert len(monitoring) == 60 and monitoring["open_positions"].max() >= 1
    assert (monitoring["equity"].to_numpy() == ctx.store.equity_curve()["equity"].to_numpy()).all()
    assert not any(a["kind"] in ("stale_data", "error") for alerts in monitoring["alerts"] for a in alerts)
    sent = pd.concat([r.pairs for r in reports]).query("order != ''")
    assert len(sent) and sent["order"].isin(orders["client_order_id"]).all() and (sent["ms"] > 0).all()
    for f in fills[fills["intent"].isin(["open", "close"])].itertuples():
        decided = pd.Timestamp(json.loads(f.note)["decided_at"])
        fill_bar = decided + pd.Timedelta(hours=1)
        side = 1 if f.side == "buy" else -1
        assert pd.Timestamp(f.time) == fill_bar  # the next bar's open, never the decision bar
        assert f.price == pytest.approx(
            opens[f.pair][fill_bar] * (1 + side * settings.costs.slippage_bps / 1e4), rel=1e-12
        )
    positions = ctx.store.positions()
    closes = {p: data[p]["close"].iloc[1858] for p in data}
    value = sum(p.sign * p.size * closes[p.pair] for p in positions.values())
    assert ctx.store.mark(pd.Timestamp("2024-06-01", tz="UTC"), closes)["equity"] == pytest.approx(
        ctx.store.cash() + value
    )


def test_a_pair_without_data_is_skipped_and_the_others_proceed(world, tmp_path):
    server, settings, data = world
    settings = own_store(settings, tmp_path)
    ctx = build_context(settings, load_secrets({}), run_id="paper-skip")
    now = at(server, data["BTC/USDT"].index[1900] + pd.Timedelta(minutes=30))
    server.inject("/api/v3/klines", "500", count=2)  # the first pair's fetch fails twice: retries exhausted
    report = run_cycle(ctx, now)
    skipped = report.pairs[report.pairs["action"] == "skipped"]
    assert list(skipped["pair"]) == ["BTC/USDT"] and "market data" in skipped["reasons"].iloc[0], report.pairs.to_dict(
        "records"
    )
    assert [(a.kind, a.pair) for a in report.snapshot.alerts] == [("error", "BTC/USDT")]
    assert (report.pairs["pair"] == "ETH/USDT").any() and report.pairs.set_index("pair").loc[
        "ETH/USDT", "action"
    ] != "skipped"


def test_start_up_refuses_what_it_cannot_do(world):
    server, settings, _ = world
    with pytest.raises(CycleError, match="has no market for"):
        build_context(settings.model_copy(update={"pairs": ("BTC/USDT", "DOGE/USDT")}), load_secrets({}), run_id="x")
    live = settings.model_copy(update={"mode": "live"})
    with pytest.raises(CycleError, match="needs the explicit confirmation"):
        build_context(live, load_secrets(KEYS), run_id="x")
    with pytest.raises(CycleError, match="needs MORNINGSTAR_EXCHANGE_API_KEY"):
        build_context(live, load_secrets({}), run_id="x", confirm_live=True)


def test_live_cycles_trade_through_the_venue_and_refuse_when_it_disagrees(world, tmp_path):
    server, settings, data = world
    settings = own_store(settings, tmp_path, mode="live")
    ctx = build_context(settings, load_secrets(KEYS), run_id="live-test", confirm_live=True, allow_unproven_model=True)
    assert ctx.store.path.name == "live.sqlite" and ctx.store.cash() == 100_000.0
    before = len(server.account.orders)
    for k in range(1955, 1995):
        now = at(server, data["BTC/USDT"].index[k] + pd.Timedelta(seconds=1))
        report = run_cycle(ctx, now)
        assert "refused" not in {a.kind for a in report.snapshot.alerts}, report.snapshot.alerts
    sent = list(server.account.orders.values())[before:]
    trades = [o for o in sent if o.type != "STOP_LOSS_LIMIT"]  # entries and exits; the others: stops at the venue
    assert trades and all(o.status == "FILLED" for o in trades)
    assert {o.client_id for o in sent} == set(ctx.store.orders()["client_order_id"])  # one venue order per intent
    positions = ctx.store.positions()
    resting = sorted(f"{o.symbol[:3]}/USDT" for o in sent if o.type == "STOP_LOSS_LIMIT" and o.status == "NEW")
    assert resting == sorted(positions)  # each held position's stop rests at the venue, once; moved ones cancelled
    for pair in ("BTC/USDT", "ETH/USDT"):
        held = positions[pair].size if pair in positions else 0.0
        assert server.account.balances.get(pair.split("/")[0], 0.0) == pytest.approx(held, abs=1e-12)
    every = ctx.shadow.frame()
    shadow = every[every["kind"] == "order"]  # each order's simulated fill: the next open plus 2 bps slippage
    orders = ctx.store.orders()
    decided = orders.query("intent in ['open', 'close'] and filled > 0")["client_order_id"]
    assert len(shadow) and set(shadow["client_order_id"]) <= set(decided) and len(shadow) >= len(decided) - 2
    for kinds, intents in (  # the bot's exits at a level, the stops the venue filled: rows of their own, one per order
        (["stop_loss", "take_profit"], ["stop_loss", "take_profit"]),
        (["venue_stop", "venue_target"], ["protect", "protect_target"]),
    ):
        rows = every[every["kind"].isin(kinds)]
        exits = orders[orders["intent"].isin(intents) & (orders["filled"] > 0)]["client_order_id"]
        assert set(rows["client_order_id"]) <= set(exits) and len(rows) >= len(exits) - 2
    assert set(every["kind"]) > {"order"}  # these 40 cycles exit at levels too
    assert shadow["diff_bps"].to_numpy() == pytest.approx(
        -2.0, abs=0.01
    )  # the local venue fills at the open, no slippage
    assert (shadow["live_delay_s"] == 1.0).all()  # filled 1 s after the close
    server.account.balances["BTC"] = server.account.balances.get("BTC", 0.0) + 1.0  # moved behind the store's back
    refused = run_cycle(ctx, at(server, data["BTC/USDT"].index[1995] + pd.Timedelta(seconds=1)))
    assert set(refused.pairs["action"]) == {"skipped"} and refused.pairs["reasons"].str.contains("BTC: venue").all()
    assert [a.level for a in refused.snapshot.alerts if a.kind == "refused"] == ["critical"]
    assert len(server.account.orders) == before + len(sent)  # and nothing was sent


def test_state_carries_over_between_processes_and_stale_data_is_flagged(world, tmp_path):
    server, settings, data = world
    settings = own_store(settings, tmp_path)
    first = build_context(settings, load_secrets({}), run_id="a")
    now = at(server, data["BTC/USDT"].index[1950] + pd.Timedelta(minutes=30))
    run_cycle(first, now)
    first.store.save_runtime(
        "risk_state", {**first.store.load_runtime("risk_state"), "cooldown_until": {"ETH/USDT": 10**9}}
    )
    now = at(server, now + pd.Timedelta(hours=1))
    report = run_cycle(build_context(settings, load_secrets({}), run_id="b"), now)  # the next bar, in a new process
    assert "skipped" not in set(report.pairs["action"])
    assert first.store.load_runtime("risk_state")["cooldown_until"] == {
        "ETH/USDT": 10**9
    }  # run "b" kept run "a"'s cooldown
    eth = report.pairs.set_index("pair").loc["ETH/USDT"]
    assert not eth["action"].startswith("open") or "cooldown" in eth["verdict"]
    later = now + pd.Timedelta(hours=5)  # the exchange stopped publishing candles 5 bars ago
    report = run_cycle(build_context(settings, load_secrets({}), run_id="c"), later)
    assert set(report.pairs["action"]) == {"skipped"} and report.pairs["reasons"].str.contains("stale").all()
    assert sorted((a.kind, a.pair) for a in report.snapshot.alerts) == [
        ("stale_data", "BTC/USDT"),
        ("stale_data", "ETH/USDT"),
    ]


def test_a_live_exit_that_does_not_go_through_is_tried_again_at_the_next_close(world, tmp_path):
    from morningstar_trader.cycle import _bars
    from morningstar_trader.kernel import check_levels
    from morningstar_trader.risk import RiskState
    from morningstar_trader.types import Order

    server, settings, data = world
    ctx = build_context(
        own_store(settings, tmp_path, mode="live"),
        load_secrets(KEYS),
        run_id="exit",
        confirm_live=True,
        allow_unproven_model=True,
    )
    now = at(server, data["BTC/USDT"].index[1970] + pd.Timedelta(seconds=1))
    assert ctx.executor.place(Order("manual-open", "ETH/USDT", "buy", 1.0)) == "filled"
    price = data["ETH/USDT"]["close"].iloc[1969]
    ctx.store.set_levels("ETH/USDT", price * 1.5, price * 3)  # the stop sits above the price: breached
    state = RiskState.start(ctx.store.cash(), now)
    server.inject("/api/v3/ticker", "503")  # the exit fails before it is sent
    check_levels(ctx.kernel, {p: b.window for p, b in _bars(ctx, now)[0].items()}, state)
    server.inject("/api/v3/order", "reject", method="POST")  # then the venue refuses it
    now = at(server, now + pd.Timedelta(hours=1))
    check_levels(ctx.kernel, {p: b.window for p, b in _bars(ctx, now)[0].items()}, state)
    assert "ETH/USDT" in ctx.store.positions()
    now = at(server, now + pd.Timedelta(hours=1))
    check_levels(ctx.kernel, {p: b.window for p, b in _bars(ctx, now)[0].items()}, state)
    assert "ETH/USDT" not in ctx.store.positions()
    exits = ctx.store.orders().query("intent == 'stop_loss'")
    assert list(exits["status"]) == ["rejected", "filled"] and exits["client_order_id"].nunique() == 2


def test_after_warm_up_the_cycle_at_the_close_asks_only_for_candles(world, tmp_path):
    from morningstar_trader.cycle import warm_up

    server, settings, data = world
    ctx = build_context(own_store(settings, tmp_path), load_secrets({}), run_id="warm")
    close = data["BTC/USDT"].index[1980]
    assert warm_up(ctx, at(server, close - pd.Timedelta(minutes=1))) == {}  # a minute before the close
    ctx.clock_offset_ms += 61_000  # both clocks a minute later, without waiting for it
    now = at(server, close + pd.Timedelta(seconds=1))
    seen = len(server.requests)
    report = run_cycle(ctx, now)
    asked = [r["path"] for r in server.requests[seen:]]
    assert asked == ["/api/v3/klines", "/api/v3/klines"] and "skipped" not in set(report.pairs["action"])


def test_an_alt_provider_down_alerts_and_the_digest_reaches_the_reviews(world, tmp_path):
    from morningstar_trader.alt_providers import AltStore, validated_series

    server, settings, data = world
    days = data["BTC/USDT"].index[1600:1800:24]
    AltStore(tmp_path / "data").save(
        "fear_greed",
        "fear_greed",
        validated_series(
            pd.DataFrame(
                {"event_time": days, "available_at": days + pd.Timedelta(hours=1), "asset": "", "value": 10.0}
            ),
            "fear_greed",
            ("value",),
        ),
    )
    s = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update={"state_dir": tmp_path / "state", "data_dir": tmp_path / "data"}),
            "llm": settings.llm.model_copy(update={"mode": "simulated"}),
            "alt": settings.alt.model_copy(
                update={
                    "fear_greed": settings.alt.fear_greed.model_copy(
                        update={"api_url": "http://127.0.0.1:9", "in_cycle": True}
                    )
                }
            ),
        }
    )  # a provider that is down
    ctx = build_context(s, load_secrets({}), run_id="alt-test")
    seen, review = [], ctx.supervisor.review
    ctx.supervisor.review = lambda r: (seen.append(r), review(r))[1]
    for k in range(1800, 1840):
        run_cycle(ctx, at(server, data["BTC/USDT"].index[k] + pd.Timedelta(minutes=30)))
        if seen:
            break
    alerts = [a for row in ctx.monitor.frame()["alerts"] for a in row]
    assert all(
        any(a["kind"] == "alt_source" and "fear_greed" in a["message"] for a in row)
        for row in ctx.monitor.frame()["alerts"]
    )
    assert not any(a["kind"] == "digest" for a in alerts)
    assert seen, "no entry was proposed in 40 cycles"
    r = seen[0]
    assert r.digest["asset"] == r.proposal.pair.split("/")[0] and r.digest["sentiment"] == -0.8
    assert "Fear & Greed 10: extreme fear" in r.digest["risk_flags"]
    with sqlite3.connect(s.paths.state_dir / "paper.sqlite") as db:
        reviews = [
            json.loads(d)["review"] for (d,) in db.execute("SELECT decision FROM journal") if json.loads(d)["review"]
        ]
    assert reviews and all(x["veto"] or ("digest:" in x["rationale"] and x["size_multiplier"] <= 0.5) for x in reviews)
    from dataclasses import replace

    from morningstar_trader.supervisor import simulated_review

    confident = simulated_review(
        replace(r, prediction={**r.prediction, "confidence": 0.9})
    )  # the same request, a sure model
    assert confident.size_multiplier == 0.5 and "digest: " in confident.rationale
