"""A real JupyterLab and a headless Chromium for the browser tests.

One JupyterLab per test session serves a temporary copy of ``notebooks/`` on a free localhost port
with a random token, with its own config, data, settings and workspace folders, so nothing on the
machine (a user's kernelspec, a saved layout, a theme) changes what the tests see. It is stopped
at the end, kernels first, whatever happened.

The browser is the system's Chromium driven by Playwright; Playwright never downloads one here.
When no Chromium is found the tests skip on a developer's machine and fail in CI (``CI`` set),
both with the command that installs one. Set ``KVMMU_CHROMIUM`` to use another executable.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"

HOW_TO_GET_CHROMIUM = (
    "the browser tests need Chromium: on Debian or Ubuntu run `sudo apt-get install chromium` "
    "(or set KVMMU_CHROMIUM to a Chromium or Chrome executable); `playwright install` cannot "
    "download one here. To run everything else: .venv/bin/python -m pytest --ignore=tests/browser"
)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Without the networking switches Chromium keeps calling home, and on a closed network those
# connections are refused and logged; the tests need nothing but localhost.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: Any = {"width": 1280, "height": 900}  # playwright ViewportSize
SERVER_START_SECONDS = 60.0

# JupyterLab settings for the test session: every cell stays in the page (the default windowing
# detaches cells scrolled out of view, and the tests read every output), and no news prompt
# covers the screenshots.
USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
PAGE_CONFIG = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}


def browser_unavailable(reason: str) -> None:
    """Fail in CI, where a missing browser is a broken machine; skip anywhere else."""
    message = f"{reason}: {HOW_TO_GET_CHROMIUM}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def find_chromium() -> str | None:
    """The Chromium to drive: ``KVMMU_CHROMIUM`` if set, else the first one on PATH."""
    chosen = os.environ.get("KVMMU_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A running JupyterLab: where it listens, its token, and the folder it serves."""

    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def notebook_url(self, name: str) -> str:
        # `reset` starts from an empty workspace: no notebook from an earlier test reopens.
        return f"{self.url}/lab/tree/notebooks/{name}?reset&token={self.token}"

    def shut_down_sessions(self) -> None:
        """Stop every notebook's kernel, so each test starts with a fresh one."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")


def isolated_jupyter_env(base: Path) -> dict[str, str]:
    """Environment for the server: fresh Jupyter folders, nothing from the user's home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    folders = {
        "JUPYTER_CONFIG_DIR": base / "config",
        "JUPYTER_DATA_DIR": base / "data",
        "JUPYTER_RUNTIME_DIR": base / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": base / "settings",
        "JUPYTERLAB_WORKSPACES_DIR": base / "workspaces",
        "IPYTHONDIR": base / "ipython",
    }
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    for relative, settings in USER_SETTINGS.items():
        path = folders["JUPYTERLAB_SETTINGS_DIR"] / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    labconfig = folders["JUPYTER_CONFIG_DIR"] / "labconfig"
    labconfig.mkdir()
    (labconfig / "page_config.json").write_text(json.dumps(PAGE_CONFIG))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_python3_kernel_is_this_python(env: dict[str, str]) -> None:
    """The notebooks ask for kernel ``python3``; it must run this interpreter, which has kvmmu.

    jupyter_client replaces a bare ``python`` in a kernelspec's argv by the server's own
    interpreter, so either form starts this environment's Python.
    """
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    spec = json.loads(listing.stdout)["kernelspecs"].get("python3")
    assert spec is not None, "no `python3` kernelspec: install ipykernel into this environment"
    program = spec["spec"]["argv"][0]
    major, minor = sys.version_info[:2]
    bare = {"python", f"python{major}", f"python{major}.{minor}"}
    assert program in bare or Path(program).resolve() == Path(sys.executable).resolve(), (
        f"kernel python3 runs {program}, not this environment's Python: "
        f"run `{sys.executable} -m ipykernel install --sys-prefix`"
    )


def start_lab(base: Path) -> LabServer:
    root = base / "root"
    shutil.copytree(
        NOTEBOOKS,
        root / "notebooks",
        ignore=shutil.ignore_patterns("build", ".ipynb_checkpoints", "__pycache__"),
    )
    env = isolated_jupyter_env(base / "jupyter")
    check_python3_kernel_is_this_python(env)
    port, token = free_port(), secrets.token_hex(24)
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = base / "jupyterlab.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}", token, root, log, process)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{server.log_tail()}")
        try:
            server.api("GET", "/api/status")
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                stop_lab(server)
                raise RuntimeError(
                    f"JupyterLab did not answer in {SERVER_START_SECONDS:.0f} s:\n"
                    f"{server.log_tail()}"
                ) from None
            time.sleep(0.25)


def stop_lab(server: LabServer) -> None:
    """Shut the kernels down through the API, then the server; kill what does not stop."""
    if server.process.poll() is None:
        try:
            for kernel in server.api("GET", "/api/kernels"):
                server.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        server.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=15)
    # The server's process group holds anything it started that outlived it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=15)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        browser_unavailable("Playwright for Python is not installed (it is in the `test` extra)")
    path = find_chromium()
    if path is None:
        browser_unavailable("no Chromium found")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[LabServer]:
    """JupyterLab serving a copy of the notebooks; requires a browser, so it starts only then."""
    server = start_lab(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        stop_lab(server)


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium_path,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report on the test item, so a fixture can see that a test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser_context: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser tab; when the test fails, the tab is saved as FAILED-<test>.png."""
    page = browser_context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{safe}.png"))
    finally:
        page.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# How JupyterLab 4 shows what the tests look for.
CODE_PROMPTS = ".jp-CodeCell .jp-InputArea-prompt"
KERNEL_STATUS = ".jp-Notebook-ExecutionIndicator"
TOP_LEVEL_OUTPUTS = ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output"
ERROR_OUTPUTS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
# What the widget renderer shows instead of a widget whose model it cannot get.
WIDGET_FAILURES = ("Loading widget...", "Error displaying widget", "model not found")
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"

# Run All is done when the kernel is idle, no cell waits ("[*]"), and either every code cell
# has run or a cell shows an error (JupyterLab then leaves the cells after it unrun, "[ ]").
RUN_FINISHED = """([prompts, status, errors]) => {
    const texts = [...document.querySelectorAll(prompts)].map(e => e.textContent.trim());
    const indicator = document.querySelector(status);
    const idle = indicator !== null && indicator.dataset.status === "idle";
    const allRan = texts.length > 0 && texts.every(t => /^\\[\\d+\\]:$/.test(t));
    const failed = document.querySelector(errors) !== null;
    return idle && !texts.includes("[*]:") && (allRan || failed);
}"""
RUN_STARTED = """(prompts) => [...document.querySelectorAll(prompts)]
    .some(e => /^\\[(\\*|\\d+)\\]:$/.test(e.textContent.trim()))"""


class LabNotebook:
    """One notebook open in JupyterLab in a browser page, driven the way a student would."""

    def __init__(self, page: Any, lab: LabServer, name: str) -> None:
        self.page, self.lab, self.name = page, lab, name
        self.console_errors: list[str] = []
        self.kernel_ready = False
        page.on("websocket", self._watch_kernel_socket)
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )

    def _watch_kernel_socket(self, socket: Any) -> None:
        # The kernel status indicator reads "idle" before the kernel is connected, and cells run
        # then are dropped; the kernel's first kernel_info reply is the sure sign it can run.
        def on_frame(payload: str | bytes) -> None:
            data = payload.encode() if isinstance(payload, str) else payload
            if b"kernel_info_reply" in data:
                self.kernel_ready = True

        if "/api/kernels/" in socket.url:
            socket.on("framereceived", on_frame)

    def stored(self) -> dict[str, Any]:
        """The committed notebook, as served."""
        notebook: dict[str, Any] = json.loads((self.lab.root / "notebooks" / self.name).read_text())
        return notebook

    def stored_widget_views(self) -> int:
        """How many widget views the committed notebook displays (top-level outputs)."""
        return sum(
            WIDGET_VIEW_MIME in output.get("data", {})
            for cell in self.stored()["cells"]
            for output in cell.get("outputs", [])
        )

    def open(self) -> None:
        self.page.goto(self.lab.notebook_url(self.name))
        self.page.locator(".jp-NotebookPanel").first.wait_for(state="visible", timeout=60_000)
        # Give the notebook the whole width: fold the file browser away.
        self.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab").first.wait_for()
        open_panel = self.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
        if open_panel.count():
            open_panel.first.click()
        deadline = time.monotonic() + 60
        while not self.kernel_ready:
            assert time.monotonic() < deadline, f"{self.name}: the kernel did not connect in 60 s"
            self.page.wait_for_timeout(100)
        self.page.locator(f'{KERNEL_STATUS}[data-status="idle"]').wait_for(timeout=60_000)
        code_cells = sum(cell["cell_type"] == "code" for cell in self.stored()["cells"])
        self.page.wait_for_function(
            "([prompts, count]) => document.querySelectorAll(prompts).length === count",
            arg=[CODE_PROMPTS, code_cells],
        )

    def menu(self, top: str, *items: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
        for item in items:
            self.page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).first.click()

    def run_all(self, timeout_ms: int = 60_000) -> None:
        """Clear every output, run all cells, and wait until the kernel is idle again."""
        self.menu("Edit", "Clear Outputs of All Cells")
        self.menu("Run", "Run All Cells")
        self.page.wait_for_function(RUN_STARTED, arg=CODE_PROMPTS, timeout=10_000)
        self.page.wait_for_function(
            RUN_FINISHED, arg=[CODE_PROMPTS, KERNEL_STATUS, ERROR_OUTPUTS], timeout=timeout_ms
        )

    def wait_until_settled(self) -> None:
        """Wait for the kernel to be idle and the page to finish drawing what it sent."""
        self.page.locator(f'{KERNEL_STATUS}[data-status="idle"]').wait_for()
        self.page.wait_for_timeout(500)

    def unexecuted_cells(self) -> list[int]:
        prompts = self.page.locator(CODE_PROMPTS).all_inner_texts()
        return [i for i, text in enumerate(prompts) if not text.strip()[1:-2].isdigit()]

    def error_outputs(self) -> list[str]:
        return [text[:800] for text in self.page.locator(ERROR_OUTPUTS).all_inner_texts()]

    def widget_views(self) -> Any:
        """The top-level outputs that are widget views (not text stand-ins for one)."""
        return self.page.locator(TOP_LEVEL_OUTPUTS).filter(
            has=self.page.locator(":scope > .jupyter-widgets")
        )

    def widget_failures(self) -> list[str]:
        texts = self.page.locator(".jp-OutputArea-output").all_inner_texts()
        return [t[:300] for t in texts if any(failure in t for failure in WIDGET_FAILURES)]

    def widget_with_control(self, description: str) -> Any:
        """The top-level widget view holding a control labelled ``description``."""
        label = self.page.locator("label.widget-label").get_by_text(description, exact=True)
        return self.widget_views().filter(has=label).first

    def set_theme(self, theme: str) -> None:
        """Switch to a theme by its menu label, e.g. ``JupyterLab Dark``, and wait for it."""
        self.menu("Settings", "Theme", theme)
        self.page.wait_for_function(
            "(light) => document.body.dataset.jpThemeLight === light",
            arg="false" if "Dark" in theme else "true",
        )
        self.page.wait_for_timeout(300)  # let the theme's CSS variables settle before a screenshot

    def screenshot(self, widget: Any, folder: Path, suffix: str = "") -> list[Path]:
        """The notebook with ``widget`` in view, and a close-up of the widget's cell outputs."""
        stem = Path(self.name).stem + suffix
        widget.scroll_into_view_if_needed()
        whole, close_up = folder / f"{stem}.png", folder / f"{stem}-widget.png"
        self.page.screenshot(path=str(whole))
        cell = self.page.locator(".jp-CodeCell").filter(has=widget).first
        cell.locator(".jp-Cell-outputWrapper").screenshot(path=str(close_up))
        return [whole, close_up]


@pytest.fixture
def open_notebook(page: Any, lab: LabServer) -> Iterator[Any]:
    """``open_notebook(name)``: the notebook opened in JupyterLab, kernel idle."""

    def opener(name: str) -> LabNotebook:
        notebook = LabNotebook(page, lab, name)
        notebook.open()
        return notebook

    yield opener
    lab.shut_down_sessions()
