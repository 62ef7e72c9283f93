"""The JupyterLab side in a real browser: `morningstar dashboard` (Voila on 127.0.0.1) driven by headless Chromium
through Playwright, on a project made through the CLI (a tiny model, a model run, a rule run, a halted paper
account). Also: the CLI and papermill runs print none of TensorFlow's, absl's, CUDA's or the kernel's start-up noise.

Debian's `chromium` is the browser (`make test` installs it when it can); Playwright's own browser download is never
used. Without a browser the browser tests skip, loudly; under CI=true they fail instead."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import MORNINGSTAR, ROOT
from lab_project import NOISE, lab_config, make_lab_project

from morningstar_trader.dashboard import fmt
from morningstar_trader.runs import load_run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab"), pytest.mark.timeout(900)]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_TIMEOUT_MS = 240_000  # Voila executes the dashboard notebook in a new kernel per page: slow on 2 busy cores


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    lab_config(root)
    return root


@pytest.fixture(scope="module")
def lab(lab_root, servers):
    """The project; the servers start first, so they come up while it is being built."""
    return make_lab_project(lab_root)


def _run_html(lab) -> list[Path]:
    "The HTML copies of run notebooks (`run --html`), not the runs' tearsheets."
    return [p for p in (lab.root / "runs").rglob("*.html") if p.parent.name != "tearsheets"]


def test_the_cli_and_run_notebooks_show_no_startup_noise(lab):
    for name, text in lab.outputs.items():
        assert not NOISE.search(text), f"{name} printed start-up noise:\n{NOISE.search(text).group(0)}"
    for path in (lab.root / "runs").rglob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        streams = [
            o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"
        ]
        assert not any(
            o.name == "stderr"
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "stream"
        ), f"{path.name} has stderr output: {streams}"
        assert not any(NOISE.search(s) for s in streams), path.name
    for path in (lab.root / "logs").glob("*"):
        assert not NOISE.search(path.read_text()), path.name
    (html,) = _run_html(lab)
    assert "skip_exec" not in html.read_text()  # the front matter is not part of the record
    sheets = {p.name for p in (lab.root / "runs" / "tearsheets").glob("*.html")}
    assert {f"{r}.html" for r in lab.run_ids} <= sheets  # each backtest run's tearsheet, beside its notebook


def test_runs_compare_shows_the_benchmarks(lab):
    with ThreadPoolExecutor(2) as pool:  # two CLI start-ups at once
        compared, listed = pool.submit(lab.run, "runs", "compare", *lab.run_ids), pool.submit(lab.run, "runs", "list")
    table = compared.result().stdout
    for stat in (
        "buy_hold_return",
        "excess_return_vs_buy_hold",
        "information_ratio_vs_buy_hold",
        "excess_return_vs_flat",
    ):
        assert stat in table
    listing = listed.result().stdout
    assert "buy_hold" in listing and lab.run_ids[0] in listing


# ---- the browser ----


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        message = (
            "no chromium on this machine: the dashboard's browser tests did NOT run (`make test` installs it as root)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        warnings.warn(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@dataclass
class Server:
    name: str
    port: int
    log: Path
    process: subprocess.Popen
    token: str = ""

    def wait_open(self, timeout_s: float = 180) -> None:
        t0 = time.perf_counter()
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            assert self.process.poll() is None and time.perf_counter() - t0 < timeout_s, (
                f"{self.name}:\n{self.log.read_text()}"
            )
            time.sleep(0.3)


def _start(
    name: str, cmd: list[str], cwd: Path, logs: Path, port: int, env: dict | None = None, token: str = ""
) -> Server:
    with open(logs / f"{name}.log", "w") as out:
        return Server(
            name,
            port,
            logs / f"{name}.log",
            subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}),
            token,
        )


def _jupyterlab(root: Path, logs: Path) -> Server:
    """JupyterLab on 127.0.0.1 with a token, serving the project (its nbs/ holds the dashboard notebook); nothing asks
    the internet (no news, no update check, no extension manager)."""
    (root / "nbs").mkdir(exist_ok=True)
    shutil.copy(ROOT / "nbs" / "dashboard.ipynb", root / "nbs" / "dashboard.ipynb")
    port, token, home = _free_port(), secrets.token_hex(16), logs / "jupyter"
    cmd = [
        str(MORNINGSTAR.with_name("jupyter")),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--KernelManager.transport=ipc",
    ]
    env = {
        "MORNINGSTAR_DASHBOARD_CONFIG": str(root / "config.yaml"),
        "MORNINGSTAR_DASHBOARD_REFRESH_S": "0",
        # a short runtime folder: kernel sockets are named after it, and a socket path has at most 107 characters (under
        # pytest-xdist, a runtime folder under the test's tmp path made every kernel start fail: JupyterLab's dialogs)
        "JUPYTER_RUNTIME_DIR": tempfile.mkdtemp(prefix="jl-"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
    }
    return _start("jupyterlab", cmd, root, logs, port, env, token)


@pytest.fixture(scope="module")
def servers(lab_root, tmp_path_factory):
    """`morningstar dashboard` (Voila) and JupyterLab for the lab project, started before the project is built (a
    server reads the project only when a page is opened); none without a browser."""
    if CHROMIUM is None:
        yield {}
        return
    logs, port = tmp_path_factory.mktemp("servers"), _free_port()
    started = {
        "voila": _start(
            "voila",
            [
                str(MORNINGSTAR),
                "dashboard",
                "--port",
                str(port),
                "--config",
                str(lab_root / "config.yaml"),
                "--refresh",
                "2",
                "--notebook",
                str(ROOT / "nbs" / "dashboard.ipynb"),
            ],
            lab_root,
            logs,
            port,
        ),
        "jupyterlab": _jupyterlab(lab_root, logs),
    }
    try:
        yield started
    finally:
        for server in started.values():
            server.process.terminate()
            server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def dashboard(lab, browser, servers, tmp_path_factory):
    """The dashboard served by `morningstar dashboard` for the lab project, open in a fresh browser profile."""
    voila = servers["voila"]
    voila.wait_open()
    context = browser.new_context(viewport={"width": 1300, "height": 1250})  # a fresh profile: nothing cached
    page = context.new_page()
    page.requests = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.shots = tmp_path_factory.mktemp("screenshots")
    page.goto(f"http://127.0.0.1:{voila.port}/", wait_until="commit")
    page.wait_for_selector(".ms-run-select select", timeout=PAGE_TIMEOUT_MS)
    page.voila_log = voila.log
    yield page
    context.close()


def _option_index(page, run_id: str) -> int:
    texts = page.locator(".ms-run-select select option").all_text_contents()
    return next(i for i, t in enumerate(texts) if t.startswith(run_id))


def test_a_picked_run_shows_its_equity_and_trades(lab, dashboard):
    page, run_id = dashboard, lab.run_ids[1]  # the rule run: it has trades
    scraps = load_run(run_id, lab.root / "runs")
    page.locator(".ms-run-select select").select_option(index=_option_index(page, run_id))
    page.wait_for_selector(f".ms-run-title:has-text('{run_id}')", timeout=150_000)
    equity = scraps["equity"]["equity"]
    title = page.locator(".gtitle", has_text="equity ").first  # the figures render in any order
    title.wait_for(timeout=150_000)
    assert title.text_content().startswith(f"equity {fmt(float(equity.iloc[-1]))}")
    assert f"buy & hold {scraps['stats']['buy_hold_return']:+.2%}" in title.text_content()
    trades = page.locator("table.ms-trades").first
    first = scraps["trades"].iloc[0]
    assert fmt(float(first["entry_price"])) in trades.inner_text() and len(scraps["trades"]) > 0
    # each pair's candles with the rule's moving averages, entries and exits by reason: drawn, not only sent
    candles = page.locator(".gtitle", has_text=f"{first['pair']} candles: ").first
    candles.wait_for(timeout=150_000)
    exits = candles.text_content().split("; exits ")[1]
    assert f"{first['exit_reason']} " in exits and page.locator("g.boxlayer path.box").count() > 0
    for part in ("predictions", "reviews", "digests", "orders", "fills", "errors"):  # the audit record (issue 26)
        assert page.locator(f".ms-{part}").count() >= 1, part
    page.screenshot(path=str(page.shots / "run.png"), full_page=False)


def test_two_runs_are_compared(lab, dashboard):
    page = dashboard
    page.locator(".ms-run-select select").select_option(index=[_option_index(page, r) for r in lab.run_ids])
    page.wait_for_selector("table.ms-compare", timeout=150_000)
    text = page.locator("table.ms-compare").inner_text()
    assert all(r in text for r in lab.run_ids) and "excess_return_vs_buy_hold" in text
    legend = page.locator(".legendtext").all_text_contents()
    assert set(lab.run_ids) <= set(legend)
    page.screenshot(path=str(page.shots / "compare.png"), full_page=False)


def test_a_halted_paper_account_is_resumed_through_the_dialog(lab, dashboard):
    page, store = dashboard, lab.root / "state" / "paper.sqlite"
    page.get_by_text("Trading", exact=True).click()
    page.wait_for_selector(".ms-trading-state.ms-halted", timeout=150_000)
    assert "drawdown 25.00%" in page.locator(".ms-trading-state").inner_text()
    assert "57,000.00" in page.locator("table.ms-positions").inner_text()  # the position's stop
    page.screenshot(path=str(page.shots / "trading-halted.png"), full_page=False)
    page.locator("button.ms-resume").click()
    page.locator(".ms-resume-reason input").fill("reviewed the drawdown in the browser test")
    page.locator("button.ms-resume-confirm").click()
    page.wait_for_selector(".ms-trading-state.ms-active", timeout=150_000)
    with sqlite3.connect(store) as db:
        state = json.loads(db.execute("SELECT value FROM runtime WHERE key = 'risk_state'").fetchone()[0])
        reasons = [json.loads(r[0]) for r in db.execute("SELECT reasons FROM journal WHERE pair = '*'")]
    assert state["trading"] == "active" and state["why"] == "resumed by operator"
    assert reasons == [["reviewed the drawdown in the browser test"]]


def test_the_data_tab_and_no_request_leaves_the_machine(lab, dashboard):
    page = dashboard
    page.get_by_text("Data", exact=True).click()
    page.wait_for_selector("table.ms-catalog", timeout=150_000)
    text = page.locator("table.ms-catalog").inner_text()
    assert "BTC/USDT" in text and "synthetic" in text and "stale" in text  # the sample set ends in 2023
    page.screenshot(path=str(page.shots / "data.png"), full_page=False)
    outside = [u for u in page.requests if not u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "blob:", "data:"))]
    assert outside == []  # widget JS and CSS from the installed packages
    log = page.voila_log.read_text()
    assert "Traceback" not in log and not NOISE.search(log)


def test_the_run_notebook_html_renders(lab, browser, tmp_path_factory):
    (html,) = _run_html(lab)
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto(html.as_uri())
    assert page.locator("img").count() >= 3  # price, equity with benchmarks, heads
    page.locator("img").nth(1).scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path_factory.mktemp("screenshots") / "run-notebook.png"), full_page=False)
    page.close()


def _kernel_for(jupyter: Server, path: str) -> None:
    """Start the notebook's kernel through the server's REST API (the call returns once its process runs): the page
    then joins this session rather than choosing and starting a kernel itself, where JupyterLab's dialogs came up."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{jupyter.port}/api/sessions",
        method="POST",
        data=json.dumps(
            {"path": path, "type": "notebook", "name": Path(path).name, "kernel": {"name": "python3"}}
        ).encode(),
        headers={"Authorization": f"token {jupyter.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=PAGE_TIMEOUT_MS / 1000) as r:
        assert json.loads(r.read())["kernel"]["name"] == "python3"


def _close(dialog, seen: list[str]) -> None:
    """Note a JupyterLab dialog's text, then close it: a kernel selector by accepting the kernel already running for
    the notebook where it lists one (its default, a new kernel, would replace that kernel under the page and cancel its
    pending requests: a page error), else its choice (its reject button means "no kernel"); any other dialog by its
    reject button (or accept, when it has none)."""
    seen.append(dialog.inner_text()[:300])
    reject, select = dialog.locator(".jp-Dialog-button.jp-mod-reject"), dialog.locator("select")
    if select.count():
        running = [t for t in select.first.locator("option").all_text_contents() if re.search(r"\.ipynb \(\w+\)$", t)]
        if running:
            select.first.select_option(label=running[0])
    keep = select.count() or not reject.count()
    (dialog.locator(".jp-Dialog-button.jp-mod-accept") if keep else reject).first.click()


def _until_idle(page, seen: list[str]) -> None:
    "Wait for the notebook's kernel to be idle, closing any dialog JupyterLab puts in front meanwhile."
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    while time.monotonic() < deadline:
        for dialog in page.locator(".jp-Dialog").all():
            _close(dialog, seen)
        if idle.count():
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"the kernel never became idle; dialogs on the way: {seen}")


def test_the_dashboard_runs_in_jupyterlab(lab, browser, servers, tmp_path_factory):
    """The dashboard notebook opened in JupyterLab and run there (Shift+Enter): its widgets render through JupyterLab's
    widget manager, and a run picked there draws its equity (a plotly FigureWidget)."""
    jupyter, run_id = servers["jupyterlab"], lab.run_ids[1]
    jupyter.wait_open()
    context = browser.new_context(viewport={"width": 1300, "height": 1100})
    page, errors, requests = context.new_page(), [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    shots = tmp_path_factory.mktemp("screenshots")
    _kernel_for(jupyter, "nbs/dashboard.ipynb")
    page.goto(
        f"http://127.0.0.1:{jupyter.port}/lab/tree/nbs/dashboard.ipynb?token={jupyter.token}", wait_until="commit"
    )
    # a dialog (seen only in loaded full runs, at any time) in front of the notebook: noted and closed before each
    # action
    dialogs = []
    page.add_locator_handler(page.locator(".jp-Dialog"), lambda d: _close(d, dialogs))
    try:
        _in_jupyterlab(page, lab, run_id, dialogs)
    except Exception as e:
        page.screenshot(path=str(shots / "jupyterlab-failed.png"), full_page=False)
        raise AssertionError(f"dialogs seen: {dialogs}; page errors: {errors}; screenshot in {shots}") from e
    finally:
        print(f"JupyterLab dialogs seen: {dialogs}")
    page.screenshot(path=str(shots / "jupyterlab.png"), full_page=False)
    context.close()
    assert errors == [] and not any("error" in d.lower() for d in dialogs), (errors, dialogs)
    assert [u for u in requests if not u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "blob:", "data:"))] == []


def _in_jupyterlab(page, lab, run_id: str, dialogs: list[str]) -> None:
    "Run the dashboard notebook's cell, pick the run, and check its equity title."
    _until_idle(page, dialogs)
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    page.keyboard.press("Shift+Enter")
    select = page.locator(".jp-OutputArea .ms-run-select select")
    select.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert {t.split()[0] for t in select.locator("option").all_text_contents()} == set(lab.run_ids)
    select.select_option(value=None, index=_option_index(page, run_id))
    page.wait_for_selector(f".jp-OutputArea .ms-run-title:has-text('{run_id}')", timeout=150_000)
    title = page.locator(".jp-OutputArea .gtitle", has_text="equity ").first
    title.wait_for(timeout=150_000)
    equity = load_run(run_id, lab.root / "runs")["equity"]["equity"]
    assert title.text_content().startswith(f"equity {fmt(float(equity.iloc[-1]))}")
