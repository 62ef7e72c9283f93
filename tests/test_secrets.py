"""Secrets come from the environment only and never reach a file, a log or an error message."""

from __future__ import annotations

import json

from conftest import Project, write_config

FAKE = {
    "MORNINGSTAR_EXCHANGE_API_KEY": "FAKE-EXCHANGE-KEY-7d1e0c",
    "MORNINGSTAR_EXCHANGE_SECRET": "FAKE-EXCHANGE-SECRET-93ab44",
    "MORNINGSTAR_LLM_API_KEY": "sk-FAKE-LLM-KEY-5f2a",
}


def leaks(project: Project, *outputs: str) -> list[str]:
    found = [f"output: {k}" for o in outputs for k, v in FAKE.items() if v in o]
    for path in project.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {k}" for k, v in FAKE.items() if v.encode() in data]
    return found


def test_secrets_never_reach_logs_outputs_or_files(project, exchange):
    exchange.inject("/api/v3/klines", "500", count=1)  # a retried failure gets logged
    ok = project.run("data", "download", "--start", "2024-05-30", env=FAKE)
    bad = project.run("data", "download", "--start", "2024-05-30", "--pairs", "NOPE/USDT", env=FAKE, check=1)
    # An error message that would carry a secret (here inside a path) is printed redacted.
    blocker = project.root / FAKE["MORNINGSTAR_EXCHANGE_SECRET"]
    blocker.write_text("a file where a folder should be")
    unwritable = project.run(
        "data", "download", "--start", "2024-05-30", "--data-dir", str(blocker / "data"), env=FAKE, check=1
    )
    assert "cannot write" in unwritable.stderr and "***REDACTED***" in unwritable.stderr
    logs = list((project.root / "logs").glob("*.jsonl"))
    records = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    assert any(r["level"] == "WARNING" and "ExchangeNotAvailable" in r["message"] for r in records)
    assert all(r["run_id"].startswith("cli-data-") for r in records)
    assert leaks(project, ok.stdout, ok.stderr, bad.stdout, bad.stderr, unwritable.stdout, unwritable.stderr) == []


def test_a_secret_in_the_config_file_is_refused_without_echoing_it(tmp_path):
    config = write_config(tmp_path, extra="llm:\n  api_key: sk-FAKE-LLM-KEY-5f2a\n")
    proc = Project(tmp_path, config).run("data", "show", check=2)
    assert "llm.api_key: secrets are not allowed in config files" in proc.stderr
    assert "MORNINGSTAR_LLM_API_KEY" in proc.stderr and "sk-FAKE" not in proc.stderr


def test_the_news_token_never_reaches_logs_outputs_or_files(tmp_path):
    import pandas as pd
    from local_alt import LocalAlt, post

    token = "FAKE-PANIC-TOKEN-77c1"
    with LocalAlt(token=token) as alt:
        alt.posts = [post(i, f"Bitcoin {i}", pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=i)) for i in range(30)]
        alt.inject("/api/v1/posts/", "503", count=1)  # a retried failure gets logged
        project = Project(tmp_path, write_config(tmp_path))
        env = {"MORNINGSTAR_CRYPTOPANIC_TOKEN": token}
        ok = project.run("alt", "download", "news", "--api-url", alt.base_url, env=env)
        alt.inject("/api/v1/posts/", "500", count=5)
        bad = project.run("alt", "download", "news", "--api-url", alt.base_url, env=env, check=1)
    assert "news headlines: +30 new rows" in ok.stdout and "after 3 attempts" in bad.stderr
    found = [o for o in (ok.stdout, ok.stderr, bad.stdout, bad.stderr) if token in o]
    found += [str(p) for p in project.root.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert found == []
    logs = "".join(p.read_text() for p in (project.root / "logs").glob("*.jsonl"))
    assert "HTTP 503" in logs and "auth_token=***REDACTED***" in logs  # httpx logs the URL: redacted
