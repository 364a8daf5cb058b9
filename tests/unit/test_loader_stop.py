"""The loader stop of `leaktrace run` on programs the tests compile: no BPF,
only ptrace of our own child. The command stops again once ld.so has mapped
its libraries, nothing in it was written, and it then runs exactly as untraced."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest

from leaktrace.commands.run import _release, _spawn_stopped
from leaktrace.process import loader_stop
from leaktrace.process.traced_process import TracedProcess
from symbols_programs import compile_program

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the loader stop is x86-64 only")


def libraries(process: TracedProcess):
    return {os.path.basename(m.path) for m in process.maps(fresh=True) if m.executable and m.path}


def loader_text(pid: int, loader) -> bytes:
    """The first page of ld.so's code as the command sees it."""
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(loader.start)
        return mem.read(4096)


def run_through(argv, tmp_path: Path):
    """Start argv stopped at exec, run it to the loader stop and on to its end;
    returns (libraries at exec, libraries at the stop, exit code, stdout)."""
    out = tmp_path / "out"
    with open(out, "w") as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            pid = _spawn_stopped(argv)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    process = TracedProcess(pid)
    at_exec = libraries(process)
    loader = loader_stop.find_loader(process)
    assert loader is not None
    text_before = loader_text(pid, loader)
    assert loader_stop.run_until_loaded(pid, loader) is None
    at_stop = libraries(process)
    assert loader_text(pid, loader) == text_before  # stepped through, never written
    _release(pid)
    _, status = os.waitpid(pid, 0)
    return at_exec, at_stop, os.waitstatus_to_exitcode(status), out.read_text()


@pytest.fixture
def program(tmp_path):
    return compile_program(tmp_path / "loads_later", "loads_later.c", "-rdynamic", "-ldl")


def test_the_command_stops_once_libc_is_mapped_and_then_runs_as_untraced(program, tmp_path):
    at_exec, at_stop, code, out = run_through([str(program)], tmp_path)
    assert not any(name.startswith("libc.so") for name in at_exec), at_exec
    assert any(name.startswith("libc.so") for name in at_stop), at_stop
    assert (code, out) == (0, "ran 7\n")


def test_a_dlopen_after_the_stop_runs_as_untraced(program, tmp_path):
    libm = subprocess.run(["gcc", "-print-file-name=libm.so.6"], capture_output=True, text=True).stdout.strip()
    _, _, code, out = run_through([str(program), libm], tmp_path)
    assert (code, out) == (0, "ran 7\n")


def test_a_loader_that_never_seems_done_is_stopped_another_way(tmp_path):
    """After the patience, a SIGSTOP stops it instead; it is taken there, so the
    command runs on after the detach."""
    pid = _spawn_stopped(["sleep", "1"])
    loader_stop.find_loader(TracedProcess(pid))
    everywhere = loader_stop.Loader(0, 1 << 64)  # no system call ever comes from outside it
    assert loader_stop.run_until_loaded(pid, everywhere, patience_s=0.2) is None
    _release(pid)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_static_program_has_no_loader_to_wait_for(tmp_path):
    static = compile_program(tmp_path / "static", "loads_later.c", "-static")
    pid = _spawn_stopped([str(static), "/nonexistent"])
    try:
        assert loader_stop.find_loader(TracedProcess(pid)) is None
    finally:
        _release(pid)
        os.waitpid(pid, 0)
