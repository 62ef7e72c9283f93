"""The README's screenshots, regenerated from the project `make demo` leaves (run it after `make demo`, from the
project root): the dashboard with the newest run picked (docs/dashboard.png) and its first pair's candles
(docs/candles.png), the newest run notebook's HTML copy
(docs/run-notebook.png) and the newest backtest's tearsheet (docs/tearsheet.png: a run notebook's or a
`morningstar backtest`'s). Headless Debian chromium through Playwright; nothing leaves 127.0.0.1.

.venv/bin/python scripts/screenshots.py [--out docs] [--config config/config.yaml]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
NOTEBOOK = Path(__file__).resolve().parents[1] / "nbs" / "dashboard.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newest(pattern: str, root: Path, *others: str) -> Path:
    "The newest file under `root` matching `pattern` or one of `others`."
    found = [p for pat in (pattern, *others) for p in root.glob(pat)]
    if not found:
        sys.exit(f"screenshots: nothing matches {root / pattern}; run `make demo` first")
    return max(found, key=lambda p: p.stat().st_mtime)


def dashboard(page, config: str, out: Path) -> None:
    "The dashboard with the newest run picked: its statistics, equity and drawdown against the benchmarks."
    port = free_port()
    cmd = [str(BIN / "morningstar"), "dashboard", "--port", str(port), "--config", config, "--refresh", "0"]
    cmd += ["--notebook", str(NOTEBOOK)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("screenshots: the dashboard did not start")
            time.sleep(0.3)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="commit")
        page.wait_for_selector(".ms-run-select select", timeout=240_000)
        page.locator(".ms-run-select select").select_option(index=0)  # newest first
        page.wait_for_selector(".ms-run-title", timeout=150_000)
        page.locator(".gtitle", has_text="equity ").first.wait_for(timeout=150_000)
        page.screenshot(path=str(out / "dashboard.png"))
        candles = page.locator(".gtitle", has_text=" candles: ").first  # the first pair's candlesticks with its trades
        candles.wait_for(timeout=150_000)
        candles.evaluate("e => e.scrollIntoView()")
        page.screenshot(path=str(out / "candles.png"))
        page.close(run_before_unload=True)  # the page's kernel ends with it
    finally:
        server.terminate()
        server.wait(timeout=30)


def static_page(page, path: Path, ready: str, shot: Path, scroll_to: str | None = None) -> None:
    "A page of the project opened from its file, scrolled to the element `scroll_to` (a selector)."
    page.goto(path.resolve().as_uri())
    page.wait_for_selector(ready, timeout=120_000)
    if scroll_to:
        page.locator(scroll_to).first.evaluate("e => e.scrollIntoView()")
    page.screenshot(path=str(shot))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs", type=Path, help="where the PNG files go (default: %(default)s)")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--runs", default="runs", type=Path, help="the project's runs folder (default: %(default)s)")
    args = ap.parse_args()
    if CHROMIUM is None:
        sys.exit("screenshots: no chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("MORNINGSTAR_PROGRESS", "0")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1300, "height": 1100})
        dashboard(context.new_page(), args.config, args.out)
        # the run notebook's plots: every pair's trades (one figure), then equity and drawdown against the benchmarks
        run_html = newest("20*/*.html", args.runs)  # runs/<date>/<run id>.html, not runs/tearsheets/
        static_page(context.new_page(), run_html, "img", args.out / "run-notebook.png", "img >> nth=1")
        static_page(
            context.new_page(),
            newest("tearsheets/backtest-*.html", args.runs, "backtests/*/tearsheet.html"),  # a run's, or a backtest's
            ".main-svg",
            args.out / "tearsheet.png",
        )
        browser.close()
    shots = ("dashboard.png", "candles.png", "run-notebook.png", "tearsheet.png")
    print(f"written: {', '.join(str(args.out / n) for n in shots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
