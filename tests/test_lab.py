"""``python -m kvmmu.lab``: the README's first command starts JupyterLab, as root too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kvmmu.lab import WELCOME, LabError, lab_command, main

ROOT = Path(__file__).resolve().parents[1]


def test_root_gets_allow_root_and_the_welcome_lesson() -> None:
    command = lab_command([], root=True, cwd=ROOT)
    assert command[:4] == [sys.executable, "-m", "jupyter", "lab"]
    assert command[4:] == [WELCOME.as_posix(), "--allow-root"]


def test_anyone_else_gets_no_allow_root_and_keeps_their_options() -> None:
    command = lab_command(["--no-browser", "--port=9999"], root=False, cwd=ROOT)
    assert command[4:] == [WELCOME.as_posix(), "--no-browser", "--port=9999"]
    again = lab_command(["--allow-root"], root=True, cwd=ROOT)
    assert again.count("--allow-root") == 1


def test_a_named_notebook_is_opened_instead_of_the_welcome(tmp_path: Path) -> None:
    (tmp_path / "mine.ipynb").write_text("{}")
    assert lab_command(["mine.ipynb"], root=False, cwd=tmp_path)[4:] == ["mine.ipynb"]
    # Outside a checkout there is no welcome lesson to open: the lab starts in the folder.
    assert lab_command([], root=False, cwd=tmp_path)[4:] == []


def test_a_missing_notebook_says_what_to_name(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="notebooks/NN_"):
        lab_command(["notebooks/99_nope.ipynb"], root=False, cwd=tmp_path)
    assert main(["notebooks/99_nope.ipynb"]) == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_launcher_starts_a_lab_that_answers(tmp_path: Path) -> None:
    """Run as this test runs (root in CI and in containers): the server comes up and answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    for name in ("CONFIG", "DATA", "RUNTIME"):
        (tmp_path / name).mkdir()
        env[f"JUPYTER_{name}_DIR"] = str(tmp_path / name)
    options = [
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=kvmmu-test",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = tmp_path / "lab.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "kvmmu.lab", *options],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the lab exited:\n{log.read_text()[-2000:]}"
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/status",
                    headers={"Authorization": "token kvmmu-test"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, f"no answer in 60 s:\n{log.read_text()}"
                time.sleep(0.25)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    assert "Running as root is not recommended" not in log.read_text()
