"""The loader stop of `leaktrace run` on programs the tests compile: no BPF,
only ptrace of our own child. The command stops again once ld.so has mapped
its libraries, its code is as it was, and it then runs exactly as untraced."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest

from leaktrace.commands.run import _release, _spawn_stopped
from leaktrace.process import loader_stop
from leaktrace.process.traced_process import TracedProcess
from leaktrace.symbols.elf import ElfSymbols
from symbols_programs import compile_program

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the loader stop is x86-64 only")


def libraries(process: TracedProcess):
    return {os.path.basename(m.path) for m in process.maps(fresh=True) if m.executable and m.path}


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
    hook = loader_stop.find_loader_hook(process)
    assert hook is not None
    before = loader_stop._peek(pid, hook.address)
    assert loader_stop.run_until_loaded(pid, hook) is None
    at_stop = libraries(process)
    assert loader_stop._peek(pid, hook.address) == before  # the breakpoint is gone
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


def test_a_dlopen_after_the_stop_meets_no_breakpoint(program, tmp_path):
    libm = subprocess.run(["gcc", "-print-file-name=libm.so.6"], capture_output=True, text=True).stdout.strip()
    _, _, code, out = run_through([str(program), libm], tmp_path)
    assert (code, out) == (0, "ran 7\n")


def test_a_loader_that_never_says_it_is_done_is_stopped_another_way(tmp_path):
    """After the patience, a SIGSTOP stops it instead; the detach discards it, so the
    command runs on (and its code is restored)."""
    pid = _spawn_stopped(["sleep", "1"])
    hook = loader_stop.find_loader_hook(TracedProcess(pid))
    never_done = loader_stop.LoaderHook(hook.address, state=hook.address)  # r_state never RT_CONSISTENT
    before = loader_stop._peek(pid, hook.address)
    assert loader_stop.run_until_loaded(pid, never_done, patience_s=0.2) is None
    assert loader_stop._peek(pid, hook.address) == before
    _release(pid)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_static_program_has_no_loader_to_wait_for(tmp_path):
    static = compile_program(tmp_path / "static", "loads_later.c", "-static")
    pid = _spawn_stopped([str(static), "/nonexistent"])
    try:
        assert loader_stop.find_loader_hook(TracedProcess(pid)) is None
    finally:
        _release(pid)
        os.waitpid(pid, 0)


def test_dynamic_symbol_finds_exported_variables_as_nm_does(program):
    nm = subprocess.run(["nm", "-D", "--defined-only", str(program)], capture_output=True, text=True,
                        check=True).stdout
    values = {fields[2]: int(fields[0], 16) for fields in map(str.split, nm.splitlines()) if len(fields) == 3}
    elf = ElfSymbols(str(program))
    assert elf.dynamic_symbol("exported_counter") == values["exported_counter"]
    assert elf.dynamic_symbol("printf") is None  # imported, not defined here
