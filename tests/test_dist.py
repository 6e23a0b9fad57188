"""The release wheel as a user gets it (issue #16): installed from dist/ into a clean
virtualenv of each supported CPython from pyenv, with no Rust toolchain on PATH, it
serves a request.

Runs only with FERROCORN_DIST_TEST=1 (.ci/dist-check.sh sets it after `make dist`), so a
stale dist/ left by an earlier build is never tested by accident; with it set, a missing
wheel or a missing CPython fails instead of skipping.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
PYTHONS = os.environ.get("FERROCORN_DIST_PYTHONS", "3.10 3.12 3.13").split()

pytestmark = pytest.mark.skipif(
    os.environ.get("FERROCORN_DIST_TEST") != "1",
    reason="set FERROCORN_DIST_TEST=1 (.ci/dist-check.sh does, after make dist)",
)


def cargo_version() -> str:
    # The first `version = ` line is [package]'s (tomllib is 3.11+).
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


def host_wheel() -> Path:
    """The manylinux abi3 wheel for this machine's architecture."""
    machine = platform.machine()
    wheels = sorted(DIST.glob(f"ferrocorn-*-cp310-abi3-*manylinux*_{machine}.whl"))
    assert len(wheels) == 1, f"expected one manylinux {machine} wheel in dist/, found {wheels}"
    return wheels[0]


def pyenv_python(version: str) -> Path:
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = str(Path.home() / ".pyenv")
    found = sorted(
        Path(root, "versions").glob(f"{version}.*/bin/python"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
    )
    assert found, f"no CPython {version} under {root}/versions"
    return found[-1]


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user without Rust: the venv and the system dirs on PATH.

    pip's own settings (PIP_*) are kept, since they say how to reach the package index.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CARGO", "RUSTUP", "RUSTC", "VIRTUAL_ENV", "PYTHON", "MATURIN"))
    }
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("version", PYTHONS)
def test_wheel_installs_without_rust_and_serves(version: str, tmp_path: Path) -> None:
    wheel = host_wheel()
    venv = tmp_path / "venv"
    subprocess.run([str(pyenv_python(version)), "-m", "venv", str(venv)], check=True)
    env = clean_env(venv)
    for tool in ("cargo", "rustc", "maturin"):
        found = run(["bash", "-c", f"command -v {tool}"], env, tmp_path)
        assert found.returncode != 0, f"{tool} is reachable in the clean env: {found.stdout}"

    # Binary packages only: nothing may be compiled, which also proves the wheel's tags
    # fit this interpreter. [standard] pulls uvloop and setproctitle from the index.
    install = run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--only-binary", ":all:"]
        + [f"{wheel}[standard]"],
        env,
        tmp_path,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    check = run(
        [
            str(venv / "bin/python"),
            "-c",
            "import ferrocorn, uvloop, setproctitle;"
            "print(ferrocorn.__file__, ferrocorn.__version__)",
        ],
        env,
        tmp_path,
    )
    assert check.returncode == 0, check.stderr
    location, installed_version = check.stdout.split()
    assert location.startswith(str(venv)), location
    assert installed_version == cargo_version()

    shown = run([str(venv / "bin/ferrocorn"), "--version"], env, tmp_path)
    assert shown.stdout.strip() == f"ferrocorn {cargo_version()}", shown.stdout + shown.stderr

    # The app lives outside the repository, so nothing but the wheel is importable.
    shutil.copy(ROOT / "examples/hello.py", tmp_path / "hello.py")
    log = tmp_path / "server.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [str(venv / "bin/ferrocorn"), "hello:app", "--port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text()
            match = re.search(r"running on http://127\.0\.0\.1:(\d+)", text)
            if match and "ferrocorn ready" in text:
                port = int(match.group(1))
                break
            time.sleep(0.1)
        assert port, f"server not ready:\n{log.read_text()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
            assert response.headers["server"] == "ferrocorn"
            assert response.read() == b"Hello, world!"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "Application startup complete" in text
    assert '"GET / HTTP/1.1" 200' in text, text
