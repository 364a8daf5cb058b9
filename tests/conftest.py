"""Test-suite policy and shared fixtures.

Markers (declared in pyproject.toml):
  privileged  needs root and BPF. Skips only outside CI when not root; under CI
              (env CI set) a non-root run fails instead.
  docker      needs a Docker daemon; the `docker` fixture starts one if needed.
Under CI a skipped privileged or docker test fails the whole run: those are
the tests that prove leaktrace works, so they must never vanish silently.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from harness import LeakyProcess, compile_c

GUARDED_MARKERS = ("privileged", "docker")
DOCKERD_ARGS = ("--iptables=false", "--bridge=none", "--storage-driver=vfs")


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def pytest_runtest_setup(item):
    if item.get_closest_marker("privileged") and os.geteuid() != 0:
        if in_ci():
            pytest.fail("privileged test run without root under CI: run the suite as root")
        pytest.skip("needs root and BPF (run the suite as root)")


# Skipped privileged/docker tests of this session, reported at the end.
_guarded_skips = []


def pytest_runtest_logreport(report):
    if report.skipped and any(m in report.keywords for m in GUARDED_MARKERS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _guarded_skips.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report):
    # A whole integration module skipped at import (importorskip, ...) is
    # just as silent: count it too.
    if report.skipped and "integration" in report.nodeid.split("/"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _guarded_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if in_ci() and _guarded_skips and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if in_ci() and _guarded_skips:
        terminalreporter.section("privileged/docker tests skipped under CI", sep="=", red=True)
        terminalreporter.write_line("CI is set, so these skips fail the run:", red=True)
        for line in _guarded_skips:
            terminalreporter.write_line(f"  {line}")


# ---- programs ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """build(src, flags=(), cxx=False, name=None) -> Path, compiled once per session."""
    out_dir = tmp_path_factory.mktemp("programs")
    # Traced programs run as their own users in some tests: keep them reachable.
    os.chmod(out_dir, 0o755)
    built = {}

    def _build(src, flags=(), cxx=False, name=None):
        key = (src, tuple(flags), cxx, name)
        if key not in built:
            built[key] = compile_c(src, out_dir, flags, cxx=cxx, out_name=name)
        return built[key]

    _build.dir = out_dir
    return _build


@pytest.fixture
def idle_target(build):
    """A live process that never allocates until told: a valid PID to attach to."""
    with LeakyProcess([build("fibonacci.c")]) as target:
        yield target


# ---- Docker --------------------------------------------------------------------------------


def _docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_dockerd(log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")
    proc = subprocess.Popen(["dockerd", *DOCKERD_ARGS], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _docker_answers():
            return proc
        time.sleep(0.5)
    _stop_dockerd(proc)
    tail = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"dockerd did not come up within 30 s (log {log_path}):\n{tail}")


def _stop_dockerd(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DockerHost:
    """Builds images without a registry and finds containers' host PIDs."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def build_image(self, binaries, tag: str) -> str:
        """An image (`docker import`) holding each binary at /app/<name> and the
        libraries `ldd` lists for it at the same paths. Returns the tag."""
        rootfs = self.workdir / ("rootfs-" + re.sub(r"[^A-Za-z0-9_.-]", "-", tag))
        (rootfs / "app").mkdir(parents=True, exist_ok=True)
        (rootfs / "tmp").mkdir(exist_ok=True)
        for binary in binaries:
            shutil.copy2(binary, rootfs / "app" / Path(binary).name)
            for lib in shared_libraries(binary):
                dest = rootfs / lib.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(lib), dest)
        tarball = rootfs.with_suffix(".tar")
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        done = subprocess.run(["docker", "import", str(tarball), tag], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"docker import failed: {done.stderr}")
        return tag

    @staticmethod
    def container_pid(name: str, timeout: float = 20) -> int:
        """The host PID of a running container's main process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name],
                                  capture_output=True, text=True)
            if done.returncode == 0 and done.stdout.strip() not in ("", "0"):
                return int(done.stdout.strip())
            time.sleep(0.2)
        pytest.fail(f"container {name} did not start within {timeout}s")


def shared_libraries(binary) -> list:
    """Absolute paths of the libraries `ldd` lists for binary (the loader included)."""
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    return [word for line in done.stdout.splitlines() for word in line.split()
            if word.startswith("/")]


@pytest.fixture(scope="session")
def docker(tmp_path_factory):
    """A Docker daemon that answers (the running one, or one started for this
    session and stopped at its end), as a DockerHost."""
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        pytest.skip("docker is not installed (scripts/setup.sh --test installs docker.io)")
    host = DockerHost(tmp_path_factory.mktemp("docker"))
    if _docker_answers():
        yield host
        return
    if os.geteuid() != 0:
        pytest.skip("no Docker daemon running and not root to start one")
    log_path = Path(tempfile.mkstemp(prefix="leaktrace-dockerd-", suffix=".log")[1])
    proc = _start_dockerd(log_path)
    try:
        yield host
    finally:
        _stop_dockerd(proc)
        log_path.unlink()  # kept only when dockerd failed to start
