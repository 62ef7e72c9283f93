"""Alternative-data APIs on 127.0.0.1 for the test suite, answering in each real API's shape.

- alternative.me Fear & Greed: `GET /fng/?limit=N&format=json`
(https://alternative.me/crypto/fear-and-greed-index/#api): `{"name", "data": [{"value": "40", "value_classification",
"timestamp": "<s>", "time_until_update"}], "metadata": {"error"}}`, newest first, numbers as strings, `limit=0` for
everything.
- blockchain.com charts: `GET /charts/<name>?timespan=&start=YYYY-MM-DD&format=json`
(https://www.blockchain.com/explorer/api/charts_api): `{"status": "ok", "name", "unit", "period": "day", "description",
"values": [{"x": <s>, "y": <float>}]}`.
- RSS 2.0 feeds at `/feeds/<name>.xml` (the XML of https://www.rssboard.org/rss-specification), items as given.
- CryptoPanic posts: `GET /api/v1/posts/?auth_token=&public=true&kind=news&page=N`
(https://cryptopanic.com/developers/api/): `{"count", "next": "<url with page=N+1>" | null, "previous", "results":
[{"kind", "id", "title", "published_at", "url", "source": {...}, "currencies": [{"code", "title"}]}]}`, newest first,
`PAGE_SIZE` per page; a wrong token is a 401 with `{"status": "Incomplete", "info": "Token not found"}`.

Faults by request count, as in `local_exchange`: "429" (with Retry-After), "503", "500", "garbage" (a 200 HTML page),
"truncated" (a 200 whose JSON is cut), "slow" (answers after `delay_s`), "notxml" (a feed answered with JSON).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import pandas as pd
from loopback import LoopbackServer, QuietHandler

FAULTS = ("429", "503", "500", "garbage", "truncated", "slow", "notxml", "retry_after_long")
PAGE_SIZE = 20
_JSON = {"Content-Type": "application/json"}


@dataclass
class _Fault:
    path: str
    kind: str
    count: int
    delay_s: float


class LocalAlt(LoopbackServer):
    """The four alternative-data APIs on one port; data is set with the `set_*` methods."""

    def __init__(self, now: pd.Timestamp | None = None, token: str = "FAKE-PANIC-TOKEN-11aa") -> None:
        super().__init__()
        self.now = now
        self.token = token
        self.fng: list[tuple[int, int]] = []  # (day start s, value)
        self.charts: dict[str, list[tuple[int, float]]] = {}  # name -> (day start s, value)
        self.feeds: dict[str, list[dict]] = {}  # name -> items {guid, title, link, pubDate}
        self.posts: list[dict] = []  # newest first, in CryptoPanic's shape
        self.requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    def inject(self, path: str, kind: str, count: int = 1, delay_s: float = 3.0) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULTS}")
        with self._lock:
            self._faults.append(_Fault(path, kind, count, delay_s))

    def _take(self, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if path.startswith(f.path):
                    f.count -= 1
                    if f.count == 0:
                        self._faults.remove(f)
                    return f
        return None

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict, bytes, float]:
        fault = self._take(path)
        with self._lock:
            self.requests.append({"path": path, "query": query})
        kind = fault.kind if fault else None
        if kind == "429":
            return 429, {**_JSON, "Retry-After": "1"}, b'{"error": "rate limited"}', 0.0
        if kind == "retry_after_long":
            return 429, {**_JSON, "Retry-After": "3600"}, b'{"error": "rate limited"}', 0.0
        if kind in ("500", "503"):
            return int(kind), {"Content-Type": "text/plain"}, b"Service Unavailable", 0.0
        if kind == "garbage":
            return 200, {"Content-Type": "text/html"}, b"<html><body>cloudflare says hi</body></html>", 0.0
        if kind == "notxml":
            return 200, _JSON, b'{"items": []}', 0.0
        status, headers, body = self._route(path, query)
        if kind == "truncated":
            body = body[: max(1, len(body) // 2)]
        return status, headers, body, fault.delay_s if kind == "slow" else 0.0

    def _route(self, path: str, query: dict[str, str]) -> tuple[int, dict, bytes]:
        if path == "/fng/":
            limit = int(query.get("limit", "1") or 1)
            rows = sorted(self.fng, reverse=True)
            rows = rows if limit == 0 else rows[:limit]
            data = [
                {
                    "value": str(v),
                    "value_classification": "Fear" if v < 50 else "Greed",
                    "timestamp": str(t),
                    **({"time_until_update": "3600"} if i == 0 else {}),
                }
                for i, (t, v) in enumerate(rows)
            ]
            return (
                200,
                _JSON,
                json.dumps({"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}).encode(),
            )
        if path.startswith("/charts/"):
            name = path.removeprefix("/charts/")
            if name not in self.charts:
                return 404, _JSON, json.dumps({"error": "Chart not found"}).encode()
            start = int(pd.Timestamp(query["start"], tz="UTC").timestamp()) if query.get("start") else 0
            values = [{"x": t, "y": y} for t, y in self.charts[name] if t >= start]
            return (
                200,
                _JSON,
                json.dumps(
                    {"status": "ok", "name": name, "unit": "", "period": "day", "description": name, "values": values}
                ).encode(),
            )
        if path.startswith("/feeds/"):
            name = path.removeprefix("/feeds/").removesuffix(".xml")
            if name not in self.feeds:
                return 404, {"Content-Type": "text/plain"}, b"Not Found"
            return 200, {"Content-Type": "application/rss+xml"}, rss(name, self.feeds[name])
        if path == "/api/v1/posts/":
            if query.get("auth_token") != self.token:
                return 401, _JSON, b'{"status": "Incomplete", "info": "Token not found"}'
            page = int(query.get("page", "1"))
            chunk = self.posts[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
            more = page * PAGE_SIZE < len(self.posts)
            nxt = f"https://cryptopanic.com/api/v1/posts/?auth_token={self.token}&page={page + 1}" if more else None
            return (
                200,
                _JSON,
                json.dumps({"count": len(self.posts), "next": nxt, "previous": None, "results": chunk}).encode(),
            )
        return 404, _JSON, b'{"error": "not found"}'


def rss(title: str, items: list[dict]) -> bytes:
    """An RSS 2.0 document; item titles are escaped as a publisher would (so HTML in them is text to strip)."""
    body = "".join(
        f"<item><title>{escape(i['title'])}</title><link>{escape(i['link'])}</link><guid>{escape(i['guid'])}</guid>"
        f"<pubDate>{i['pubDate']}</pubDate></item>"
        for i in items
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{escape(title)}</title>'
        f"<link>http://127.0.0.1/</link><description>test</description>{body}</channel></rss>"
    ).encode()


def rss_date(t: pd.Timestamp) -> str:
    return format_datetime(t.tz_convert("UTC").to_pydatetime())


def post(i: int, title: str, t: pd.Timestamp, codes: tuple[str, ...] = ()) -> dict:
    """One CryptoPanic post."""
    return {
        "kind": "news",
        "domain": "example.com",
        "source": {"title": "Example", "region": "en", "domain": "example.com"},
        "title": title,
        "published_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "slug": f"post-{i}",
        "id": i,
        "url": f"https://cryptopanic.com/news/{i}/post-{i}",
        "created_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "votes": {
            "negative": 0,
            "positive": 1,
            "important": 0,
            "liked": 0,
            "disliked": 0,
            "lol": 0,
            "toxic": 0,
            "saved": 0,
            "comments": 0,
        },
        "currencies": [
            {"code": c, "title": c, "slug": c.lower(), "url": f"https://cryptopanic.com/news/{c.lower()}/"}
            for c in codes
        ],
    }


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.send(*self.server.owner.answer(url.path, dict(parse_qsl(url.query, keep_blank_values=True))))


LocalAlt.handler = _Handler
