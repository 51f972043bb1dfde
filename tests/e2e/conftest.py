"""Shared by the end-to-end tests: the app (or any Streamlit script) as a real ``streamlit run`` server on a free
127.0.0.1 port, with its own TMPDIR, HOME, vault and state folders; and a headless Chromium driven by Playwright.

Chromium is Debian's (``apt-get install chromium``, done by .ci/run); Playwright's own browser download is not used.
A missing browser FAILS the browser tests with a message saying what to install - they are never skipped silently.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"

# Loaded by a server process through PYTHONPATH when ``spy=True`` (test_no_plaintext): every rollover of a SpooledTemporaryFile (or any
# other tempfile.TemporaryFile) becomes a named, kept file in TMPDIR, so a folder scan sees it.
SITECUSTOMIZE = '''
import tempfile as _t
def _visible(*args, **kwargs):
    kwargs.update(delete=False, prefix="spill-")
    return _t.NamedTemporaryFile(*args, **kwargs)
_t.TemporaryFile = _visible
'''

#: Flags for Debian's chromium as root in a container (no GPU, no sandbox, no calls home).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run <script>`` in a subprocess with its own TMPDIR/HOME; ``spy`` loads the TemporaryFile spy."""

    def __init__(self, script: Path, cwd: Path, base: Path, extra_env: dict[str, str], *, spy: bool = True):
        self.port = free_port()
        self.tmp, self.home, site = base / "tmp", base / "home", base / "site"
        for d in (self.tmp, self.home, site):
            d.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYSTALQC_", "XDG_", "STREAMLIT_"))}
        env.update(TMPDIR=str(self.tmp), HOME=str(self.home), **extra_env)
        if spy:
            (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env["PYTHONPATH"] = str(site)
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env.pop(var, None)
        self.log = base / "server.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=cwd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, http=None, timeout_s: float = 60.0) -> str | None:
        """Wait for /_stcore/health; return the XSRF cookie it sets."""
        import requests

        if http is None:
            http = requests.Session()
            http.trust_env = False  # never a proxy for 127.0.0.1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                r = http.get(f"{self.url}/_stcore/health", timeout=2)
                if r.status_code == 200:
                    return r.cookies.get("_streamlit_xsrf")
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


@pytest.fixture
def app_server(tmp_path):
    """app.py served on a free port with a fresh (not yet created) vault under tmp_path; stopped at teardown."""
    vault_dir, state_dir = tmp_path / "app" / "vault", tmp_path / "app" / "state"
    server = Server(ROOT / "app.py", ROOT, tmp_path / "app",
                    {"CRYSTALQC_VAULT": str(vault_dir), "CRYSTALQC_STATE_DIR": str(state_dir)}, spy=False)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def chromium_path() -> str:
    """Debian's chromium (or CRYSTALQC_CHROMIUM); fails the test with what to install when there is none."""
    candidates = [os.environ.get("CRYSTALQC_CHROMIUM", ""), "/usr/bin/chromium",
                  shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail("The browser tests need Chromium and none was found: install it with `apt-get install -y chromium`"
                " (bash .ci/run does this) or set CRYSTALQC_CHROMIUM to a Chromium executable.", pytrace=False)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium per test worker, driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The browser tests need the `playwright` package: `make test` installs requirements-dev.txt.",
                    pytrace=False)
    executable = chromium_path()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (own cookies, own Streamlit session) with a 1280x900 viewport and downloads on."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(60_000)
    try:
        yield context.new_page()
    finally:
        context.close()


# ------------------------------------------------------------------------------------------------ figures
# Figures a test records with ``record_property`` (e.g. the browser's upload-to-result time) are printed in the
# summary of the run, also under xdist (the properties travel with the test reports to the controller).
_FIGURES: list[tuple[str, object]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        _FIGURES.extend((report.nodeid, value) for key, value in report.user_properties
                        if key == "upload_to_result")


def pytest_terminal_summary(terminalreporter):
    for nodeid, figure in _FIGURES:
        terminalreporter.write_line(f"{nodeid}: upload-to-result {json.dumps(figure)}")
