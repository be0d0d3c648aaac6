"""`lucy serve` as a newcomer runs it: a real process, a real port, a real database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_config import CLEAN_ENV

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(url: str, proc: subprocess.Popen[str], limit: float = 90.0) -> tuple[int, str]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lucy serve exited early:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is root-only (0700), and as root the embedded server runs as
    # the postgres user, which must be able to enter the directory.
    path = Path(tempfile.mkdtemp(prefix="lucy-serve-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lucy", "serve"], env={**CLEAN_ENV, "LOG_FORMAT": "json", **env}, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_serve_on_the_embedded_database_answers_health_and_metrics(data_dir: Path) -> None:
    port = free_port()
    proc = start({"LUCY_DATA_DIR": str(data_dir / "state"), "PORT": str(port)}, data_dir)
    try:
        status, body = wait_for(f"http://127.0.0.1:{port}/healthz", proc)
        assert status == 200 and '"ok": true' in body
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200  # migrations were applied at start
        status, metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "lucy_turns_total" in metrics
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "embedded PostgreSQL" in err
    assert (data_dir / "state" / "pgdata" / "PG_VERSION").exists()
    # The embedded server was stopped with Lucy: its pid file is gone.
    assert not (data_dir / "state" / "pgdata" / "postmaster.pid").exists()


def test_serve_with_database_url_migrates_and_is_ready(db_dsn: str, tmp_path: Path) -> None:
    port = free_port()
    proc = start({"DATABASE_URL": db_dsn, "PORT": str(port)}, tmp_path)
    try:
        assert wait_for(f"http://127.0.0.1:{port}/readyz", proc)[0] == 200
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "embedded" not in err


def test_serve_with_an_unreachable_database_says_so_plainly(tmp_path: Path) -> None:
    env = {**CLEAN_ENV, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/lucy",
           "PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "lucy", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Check DATABASE_URL" in result.stderr


def test_embedded_database_in_a_directory_postgres_cannot_enter_is_explained(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another user")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    tmp_path.chmod(0o700)
    result = subprocess.run(
        [sys.executable, "-m", "lucy", "migrate"], env={**CLEAN_ENV, "LUCY_DATA_DIR": str(locked / "state")},
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert "cannot enter" in result.stderr and "LUCY_DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr
