"""Alternative data in the features: no look-ahead (tables truncated at a bar's close give the same row), the
declared spec verified when a model loads, and the stale policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from artifact_kit import SCALES, SETTINGS, sample_bars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morningstar_trader.alt_providers import AltStore, validated_series
from morningstar_trader.config import AltDataSource, FeatureSettings, Settings
from morningstar_trader.features import DataPreparation
from morningstar_trader.model import EnhancedHybridModel, ModelError, MorningstarModel, save_model
from morningstar_trader.types import Bars

BARS = sample_bars(400)  # ETH/USDT, hourly
FEATS = SETTINGS.features


def alt_settings(max_age="6h", policy="refuse") -> FeatureSettings:
    return FEATS.model_copy(
        update={
            "alt_data": (
                AltDataSource(name="fg", source="fear_greed", columns=("value",), max_age="2d"),
                AltDataSource(
                    name="fund", source="funding", columns=("funding_rate",), max_age=max_age, stale_policy=policy
                ),
            )
        }
    )


@st.composite
def tables(draw):
    """Random publication times (some exactly at a bar close) for a market-wide and a per-asset series."""
    start, end = BARS.frame.index[0].value, (BARS.frame.index[-1] + pd.Timedelta(hours=1)).value

    def times(n):
        raw = draw(st.lists(st.integers(start, end), min_size=n, max_size=n))
        exact = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        return pd.to_datetime([r - r % 3_600_000_000_000 if e else r for r, e in zip(raw, exact)], utc=True)

    fg = pd.DataFrame(
        {"published_at": times(12), "asset": "", "value": draw(st.lists(st.floats(0, 100), min_size=12, max_size=12))}
    )
    t = times(40)
    fund = pd.DataFrame(
        {
            "published_at": t,
            "asset": draw(st.lists(st.sampled_from(["ETH", "BTC"]), min_size=40, max_size=40)),
            "funding_rate": draw(st.lists(st.floats(-0.01, 0.01), min_size=40, max_size=40)),
        }
    )
    return fg.sort_values("published_at"), fund.sort_values("published_at")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.integers(0, len(BARS) - 1), st.sampled_from(["refuse", "carry"]))
def test_no_look_ahead_in_alternative_data(tabs, i, policy):
    fg, fund = tabs
    prep = DataPreparation(alt_settings(policy=policy), "1h", alt_tables={"fg": fg, "fund": fund})
    full = prep.frame(BARS)
    t = BARS.frame.index[i]
    close = t + pd.Timedelta(hours=1)
    cut = DataPreparation(
        prep.settings,
        "1h",
        alt_tables={"fg": fg[fg["published_at"] < close], "fund": fund[fund["published_at"] < close]},
    )
    part = cut.frame(Bars(BARS.exchange, BARS.pair, "1h", BARS.frame.loc[:t]))
    names = prep.technical_names + prep.context_names
    assert (t in full.index) == (t in part.index)
    if t in full.index:
        np.testing.assert_allclose(
            full.loc[t, names].to_numpy(float), part.loc[t, names].to_numpy(float), rtol=1e-9, atol=1e-12
        )
        assert np.isfinite(full.loc[t, names].to_numpy(float)).all()


def _store(tmp_path, rate_lag_h: float = 0.0) -> AltStore:
    store = AltStore(tmp_path / "data")
    idx = BARS.frame.index
    days = pd.date_range(idx[0].floor("D") - pd.Timedelta(days=2), idx[-1], freq="D")
    store.save(
        "fear_greed",
        "fear_greed",
        validated_series(
            pd.DataFrame(
                {
                    "event_time": days,
                    "available_at": days + pd.Timedelta(hours=1),
                    "asset": "",
                    "value": np.arange(len(days), dtype=float),
                }
            ),
            "fear_greed",
            ("value",),
        ),
    )
    t = pd.date_range(idx[0] - pd.Timedelta(days=1), idx[-1], freq="8h")
    for asset, sign in (("ETH", 1), ("BTC", -1)):
        store.save(
            "funding",
            asset,
            validated_series(
                pd.DataFrame(
                    {
                        "event_time": t,
                        "available_at": t + pd.Timedelta(minutes=1),
                        "asset": asset,
                        "funding_rate": sign * 1e-4,
                    }
                ),
                "funding",
                ("funding_rate",),
            ),
        )
    return store


def test_a_model_with_provider_data_declares_and_verifies_it(tmp_path):
    _store(tmp_path)
    s = Settings(**{**SETTINGS.model_dump(), "paths": {"data_dir": str(tmp_path / "data")}}).model_copy(
        update={"features": alt_settings(max_age="9h")}
    )
    from morningstar_trader.alt_data import load_alt_tables

    prep = DataPreparation(s.features, "1h", alt_tables=load_alt_tables(s.features.alt_data, s.paths.data_dir))
    frame = prep.frame(BARS)
    assert (frame["fund_funding_rate"] == 1e-4).all()  # ETH/USDT reads ETH's funding, not BTC's
    prep = prep.fit([frame])
    net = EnhancedHybridModel(prep.settings.window, len(prep.technical_names), len(prep.context_names), s.model).build(
        seed=1
    )
    path = save_model(
        tmp_path / "m", net, prep, {"heads": list(s.model.heads), "target_scale": dict(SCALES), "seed": 1}, {}
    )
    model = MorningstarModel.load(path, s)
    assert model.prep.spec()["alt_data"][1] == {
        "name": "fund",
        "columns": ["funding_rate"],
        "source": "funding",
        "as_of": "available_at, strictly before the bar's close",
        "max_age": "9h",
        "stale_policy": "refuse",
    }
    with pytest.raises(ModelError, match="alt_data"):
        MorningstarModel.load(path, s.model_copy(update={"features": alt_settings(max_age="12h")}))
    with pytest.raises(ModelError, match="alternative data need the config"):
        MorningstarModel.load(path)


def test_stale_values_refused_or_carried(tmp_path):
    _store(tmp_path)
    from morningstar_trader.alt_data import load_alt_tables

    fs = alt_settings(max_age="7h")  # funding comes every 8 h: the last hour of each is stale
    tabs = load_alt_tables(fs.alt_data, tmp_path / "data")
    refused = DataPreparation(fs, "1h", alt_tables=tabs).frame(BARS)
    carried = DataPreparation(alt_settings(max_age="7h", policy="carry"), "1h", alt_tables=tabs).frame(BARS)
    dropped = carried.index.difference(refused.index)
    assert len(dropped) and refused.index.isin(carried.index).all()
    assert (carried.loc[dropped, "fund_age_hours"] > 7).all() and (
        carried.loc[refused.index, "fund_age_hours"] <= 7
    ).all()
    assert refused["segment"].nunique() > 1 and np.isfinite(carried.to_numpy(float)).all()


def test_a_cycle_refresh_alerts_for_a_provider_down_and_for_stale_sources(tmp_path):
    from types import SimpleNamespace

    from morningstar_trader.alt_data import load_alt_tables
    from morningstar_trader.cycle import refresh_alt

    _store(tmp_path)
    s = Settings(
        paths={"data_dir": str(tmp_path / "data")},
        retry={"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
        alt={"fear_greed": {"api_url": "http://127.0.0.1:9", "in_cycle": True}},
        features=alt_settings(max_age="9h"),
    )
    prep = DataPreparation(
        s.features,
        "1h",
        alt_tables={
            "fg": pd.DataFrame({"published_at": pd.to_datetime([], utc=True), "value": []}),
            "fund": pd.DataFrame({"published_at": pd.to_datetime([], utc=True), "funding_rate": []}),
        },
    )
    ctx = SimpleNamespace(settings=s, model=SimpleNamespace(prep=prep))
    fresh = refresh_alt(ctx, BARS.frame.index[-1])
    assert [a.kind for a in fresh] == ["alt_source"] and "fear_greed" in fresh[0].message
    assert len(ctx.model.prep.alt_tables["fund"]) > 0  # reloaded from the store
    late = refresh_alt(ctx, BARS.frame.index[-1] + pd.Timedelta(days=3))
    assert sorted(a.message.split(":")[0] for a in late if a.kind == "stale_alt") == [
        "fg",
        "fund BTC",
    ]  # per asset traded
    assert load_alt_tables(s.features.alt_data, s.paths.data_dir).keys() == {"fg", "fund"}
