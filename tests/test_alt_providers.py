"""Alternative-data providers against local servers in each real API's shape, through the real clients."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from local_alt import LocalAlt, post, rss_date
from local_exchange import LocalExchange

from morningstar_trader.alt_providers import AltDataError, AltStore, HttpClient, NewsProvider, provider
from morningstar_trader.config import RetrySettings, Settings, load_secrets

NOW = pd.Timestamp.now(tz="UTC").floor("D")
FAST = {"max_attempts": 3, "initial_delay_s": 0.05, "max_delay_s": 2.0}


@pytest.fixture
def alt():
    with LocalAlt() as server:
        days = [int((NOW - pd.Timedelta(days=i)).timestamp()) for i in range(10)]
        server.fng = [(t, 20 + i) for i, t in enumerate(days)]
        server.charts = {"hash-rate": [(t, 5e8 + i) for i, t in enumerate(sorted(days))]}
        yield server


def settings(tmp_path, **alt) -> Settings:
    return Settings(paths={"data_dir": str(tmp_path / "data")}, retry=FAST, alt=alt)


def test_fear_greed_incremental_and_atomic(tmp_path, alt):
    s = settings(tmp_path, fear_greed={"api_url": alt.base_url})
    assert provider("fear_greed", s).download(AltStore(s.paths.data_dir)) == {"fear_greed": 10}
    assert alt.requests[-1]["query"]["limit"] == "0"  # nothing stored: everything
    # a new value between the newest stored (midnight) and now (noon was in the future before noon: a morning failure)
    alt.fng.append((int((NOW + (pd.Timestamp.now(tz="UTC") - NOW) / 2).timestamp()), 50))
    got = provider("fear_greed", s).download(AltStore(s.paths.data_dir))
    assert got == {"fear_greed": 1} and alt.requests[-1]["query"]["limit"] == "2"  # only the days since, plus overlap
    table = AltStore(s.paths.data_dir).read("fear_greed", "fear_greed")
    assert (table["available_at"] - table["event_time"] == pd.Timedelta(hours=1)).all()
    assert table["event_time"].is_monotonic_increasing and table["value"].dtype == "float64"


@pytest.mark.parametrize("fault", ["429", "503", "500"])
def test_temporary_faults_are_retried(tmp_path, alt, fault):
    alt.inject("/fng/", fault, count=2)
    s = settings(tmp_path, fear_greed={"api_url": alt.base_url})
    t0 = time.monotonic()
    assert provider("fear_greed", s).download(AltStore(s.paths.data_dir))["fear_greed"] == 10
    assert len(alt.requests) == 3
    if fault == "429":
        assert time.monotonic() - t0 >= 2.0  # Retry-After: 1, twice


@pytest.mark.parametrize(
    "fault,why",
    [
        ("garbage", "not JSON"),
        ("truncated", "not JSON"),
        ("retry_after_long", "asked to wait 3600 s"),
        ("503", "after 3 attempts"),
    ],
)
def test_permanent_faults_store_nothing(tmp_path, alt, fault, why):
    alt.inject("/fng/", fault, count=5)
    s = settings(tmp_path, fear_greed={"api_url": alt.base_url})
    with pytest.raises(AltDataError, match=why):
        provider("fear_greed", s).download(AltStore(s.paths.data_dir))
    assert not (s.paths.data_dir / "processed/alt/fear_greed").exists()
    assert len(alt.requests) == (3 if fault == "503" else 1)  # garbage and a long Retry-After are not retried


def test_a_slow_answer_times_out_and_is_retried(alt):
    alt.inject("/fng/", "slow", count=1, delay_s=3)
    http = HttpClient(RetrySettings(**FAST), timeout_s=0.5)
    doc = http.json("fng", f"{alt.base_url}/fng/", {"limit": 1})
    assert len(doc["data"]) == 1 and len(alt.requests) == 2


def test_a_client_error_is_not_retried(tmp_path, alt):
    s = settings(tmp_path, onchain={"api_url": alt.base_url, "series": ["no-such-chart"]})
    with pytest.raises(AltDataError, match="HTTP 404.*not retried|not retried.*404"):
        provider("onchain", s).download(AltStore(s.paths.data_dir))
    assert len(alt.requests) == 1


def test_onchain_series(tmp_path, alt):
    s = settings(tmp_path, onchain={"api_url": alt.base_url, "series": ["hash-rate"]})
    assert provider("onchain", s).download(AltStore(s.paths.data_dir), start=NOW - pd.Timedelta(days=4)) == {
        "hash_rate": 5
    }
    assert alt.requests[-1]["query"]["format"] == "json"
    table = AltStore(s.paths.data_dir).table("onchain", ("hash_rate",))
    assert list(table.columns) == ["published_at", "asset", "hash_rate"] and len(table) == 5


def test_news_from_feeds_and_posts(tmp_path, alt):
    t = NOW - pd.Timedelta(hours=5)
    alt.feeds["a"] = [
        {
            "guid": "g1",
            "link": "https://n/1",
            "title": "<b>Bitcoin</b> ETF <script>steal()</script>approved",
            "pubDate": rss_date(t),
        },
        {"guid": "g2", "link": "https://n/2", "title": "x" * 1_000_000, "pubDate": rss_date(t)},
        {
            "guid": "g3",
            "link": "https://n/3",
            "title": "from the future",
            "pubDate": rss_date(NOW + pd.Timedelta(days=3)),
        },
        {"guid": "g1", "link": "https://n/1", "title": "dup", "pubDate": rss_date(t)},
    ]
    alt.posts = [post(i, f"Solana headline {i}", t - pd.Timedelta(minutes=i), ("SOL",)) for i in range(45)]
    s = settings(tmp_path, news={"api_url": alt.base_url, "feeds": [f"{alt.base_url}/feeds/a.xml"]})
    secrets = load_secrets({"MORNINGSTAR_CRYPTOPANIC_TOKEN": alt.token})
    assert provider("news", s, secrets).download(AltStore(s.paths.data_dir)) == {"headlines": 47}
    assert [r["query"].get("page") for r in alt.requests if r["path"] == "/api/v1/posts/"] == ["1", "2", "3"]
    news = AltStore(s.paths.data_dir).read("news", "headlines").set_index("id")
    assert news.loc["g1", "title"] == "Bitcoin ETF approved" and news.loc["g1", "assets"] == "BTC"
    assert len(news.loc["g2", "title"]) == 300 and "g3" not in news.index
    assert news.loc["cryptopanic:0", "assets"] == "SOL"
    alt.posts.insert(0, post(99, "newer", NOW - pd.Timedelta(minutes=1)))
    provider("news", settings(tmp_path, news={"api_url": alt.base_url}), secrets).download(AltStore(s.paths.data_dir))
    assert alt.requests[-1]["query"]["page"] == "1"  # incremental: the first page reaches the stored items


def test_news_bad_inputs(tmp_path, alt):
    alt.feeds["a"] = []
    alt.inject("/feeds/a.xml", "notxml")
    s = settings(tmp_path, news={"feeds": [f"{alt.base_url}/feeds/a.xml"]})
    with pytest.raises(AltDataError, match="not an RSS/Atom feed"):
        provider("news", s).download(AltStore(s.paths.data_dir))
    with pytest.raises(AltDataError, match="MORNINGSTAR_CRYPTOPANIC_TOKEN is not"):
        provider("news", settings(tmp_path, news={"api_url": alt.base_url})).download(AltStore(s.paths.data_dir))
    bad = load_secrets({"MORNINGSTAR_CRYPTOPANIC_TOKEN": "WRONG-TOKEN-123"})
    with pytest.raises(AltDataError) as e:
        provider("news", settings(tmp_path, news={"api_url": alt.base_url}), bad).download(AltStore(s.paths.data_dir))
    assert "HTTP 401" in str(e.value) and "WRONG-TOKEN-123" not in str(e.value)
    assert not (s.paths.data_dir / "processed/alt/news").exists()
    assert isinstance(provider("news", s), NewsProvider)


def test_funding_and_open_interest_through_ccxt_binanceusdm(tmp_path):
    start = NOW - pd.Timedelta(days=20)
    ms = lambda t: int(t.timestamp() * 1000)
    funding = {
        s: [(ms(start + pd.Timedelta(hours=8 * i)), 1e-4 * (i % 3 - 1), 100.0 + i) for i in range(58)]
        for s in ("BTCUSDT", "ETHUSDT")
    }
    oi = {
        s: [(ms(start + pd.Timedelta(hours=i)), 1000.0 + i, 1e6 + i) for i in range(24 * 19)]
        for s in ("BTCUSDT", "ETHUSDT")
    }
    with LocalExchange({}, "1h") as ex:
        ex.set_futures(funding, oi)
        s = settings(tmp_path, funding={"api_url": ex.base_url}, open_interest={"api_url": ex.base_url})
        s = s.model_copy(update={"pairs": ("BTC/USDT", "ETH/USDT")})
        store = AltStore(s.paths.data_dir)
        ex.inject("/fapi/v1/fundingRate", "503", count=1)
        p = provider("funding", s)
        p.page = 20
        assert p.download(store, start=start) == {"BTC": 58, "ETH": 58}
        assert provider("open_interest", s).download(store, start=start) == {"BTC": 456, "ETH": 456}
        ex.set_futures({k: v + [(ms(start + pd.Timedelta(hours=8 * 58)), 2e-4, 1.0)] for k, v in funding.items()}, oi)
        assert provider("funding", s).download(store) == {"BTC": 1, "ETH": 1}
        paths = [r["path"] for r in ex.requests]
    assert "/fapi/v1/exchangeInfo" in paths and "/futures/data/openInterestHist" in paths
    f = store.read("funding", "BTC")
    assert f["funding_rate"].tolist()[:3] == [-1e-4, 0.0, 1e-4] and (f["available_at"] > f["event_time"]).all()
    o = store.read("open_interest", "ETH")
    assert (o["available_at"] - o["event_time"] == pd.Timedelta(hours=1)).all()
