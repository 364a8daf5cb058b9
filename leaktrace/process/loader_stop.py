"""Impure: let a command `run` started run until its dynamic loader has mapped
and relocated its libraries, and stop it there (x86-64, glibc's loader).

Why: `run` loads the unwind tables while the command is stopped at exec, when
only the program and ld.so are mapped. libc and the other libraries arrive a
moment later, so the first allocations (library constructors, the start of
main) would be walked before their tables are in and their stacks cut.

How, the way debuggers learn a program's libraries: glibc's loader calls the
empty function _dl_debug_state each time its list of objects changes, and
sets _r_debug.r_state to RT_CONSISTENT once the start-up objects are mapped
and relocated (before any constructor runs). The command is our tracee from
PTRACE_TRACEME until the caller detaches it, so a breakpoint (int3) there
stops it at that moment; earlier calls (RT_ADD) return at once, as the empty
function would. The original byte is written back before the command goes on,
so it runs the code it was built with. A loader without those symbols (a
static program, musl) or another architecture: find_loader_hook says None
and the caller keeps the tables of the exec stop, as before.

Contract: find_loader_hook(process) -> LoaderHook or None, while the command
is stopped at exec. run_until_loaded(pid, hook, idle) resumes it and returns
None once it is stopped again at that point (the caller loads the tables and
detaches), or its wait status if it ended first. If the point is not reached
within PATIENCE_S (a loader that never calls it), the command is stopped with
SIGSTOP instead, which the detach discards.
"""
from __future__ import annotations

import ctypes
import os
import platform
import signal
import struct
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..base.errors import LeaktraceError, TargetError
from ..symbols.elf import open_elf_in_root
from .traced_process import TracedProcess

PTRACE_PEEKDATA, PTRACE_POKEDATA, PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS = 2, 5, 7, 12, 13
AT_BASE = 7  # auxv: where the program interpreter (ld.so) is loaded
RT_CONSISTENT = 0  # enum r_state in <link.h>
R_STATE_OFFSET = 24  # struct r_debug: int r_version; r_map; r_brk; r_state
INT3 = 0xCC
EMPTY_BODIES = (b"\xc3", b"\xf3\x0f\x1e\xfa\xc3")  # ret; endbr64 + ret
RIP, RSP = 16, 19  # indexes in struct user_regs_struct (27 words)
PATIENCE_S = 10.0  # glibc's loader gets there in milliseconds; this only bounds a stranger one
POLL_S = 0.01

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long
_Registers = ctypes.c_uint64 * 27


@dataclass(frozen=True)
class LoaderHook:
    address: int  # _dl_debug_state in the command
    state: int  # _r_debug.r_state in the command


def find_loader_hook(process: TracedProcess) -> Optional[LoaderHook]:
    """Where glibc's loader in the stopped command says its libraries are in; None if unknown."""
    if platform.machine() != "x86_64":
        return None
    base = _auxv(process.pid).get(AT_BASE, 0)
    loader = next((m for m in process.maps(fresh=True) if m.start == base and m.path), None)
    if not base or loader is None:
        return None  # a static program: no loader, nothing maps late
    try:
        elf = open_elf_in_root(process.root, loader.path)
    except LeaktraceError:
        return None
    function, r_debug = elf.find_function("_dl_debug_state"), elf.dynamic_symbol("_r_debug")
    if function is None or r_debug is None:
        return None
    hook = LoaderHook(base + function[0], base + r_debug + R_STATE_OFFSET)  # ld.so is linked at 0
    code = struct.pack("<q", _peek(process.pid, hook.address))
    return hook if any(code.startswith(body) for body in EMPTY_BODIES) else None


def run_until_loaded(pid: int, hook: LoaderHook, idle: Callable[[float], None] = time.sleep,
                     patience_s: float = PATIENCE_S) -> Optional[int]:
    """Resume the stopped command until its loader reaches hook; None once it is stopped
    there with its code restored, or its wait status if it ended first."""
    original = _peek(pid, hook.address)
    _poke(pid, hook.address, original & ~0xFF | INT3)
    deadline, stopping, deliver = time.monotonic() + patience_s, False, 0
    while True:
        _ptrace(PTRACE_CONT, pid, None, deliver)
        status = _wait(pid, idle, None if stopping else deadline)
        if status is None:  # too long: stop it another way
            os.kill(pid, signal.SIGSTOP)
            stopping, deliver = True, 0
            status = _wait(pid, idle, None)
        if not os.WIFSTOPPED(status):
            return status
        stopped_by, deliver = os.WSTOPSIG(status), 0
        registers = _registers(pid)
        if stopped_by == signal.SIGTRAP and registers[RIP] == hook.address + 1:
            if stopping or _peek(pid, hook.state) & 0xFFFFFFFF == RT_CONSISTENT:
                _poke(pid, hook.address, original)
                registers[RIP] = hook.address  # it runs the restored function itself
                _set_registers(pid, registers)
                return None
            _return_at_once(pid, registers)
        elif stopping and stopped_by == signal.SIGSTOP:
            _poke(pid, hook.address, original)
            return None
        else:
            deliver = stopped_by  # the command's own signal: pass it on


def _return_at_once(pid: int, registers) -> None:
    """Do what the empty function does: return to its caller."""
    registers[RIP] = _peek(pid, registers[RSP]) & (1 << 64) - 1
    registers[RSP] += 8
    _set_registers(pid, registers)


def _wait(pid: int, idle: Callable[[float], None], deadline: Optional[float]) -> Optional[int]:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if deadline is not None and time.monotonic() > deadline:
            return None
        idle(POLL_S)


def _auxv(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/auxv", "rb") as auxv:
            data = auxv.read()
    except OSError:
        return {}
    words = struct.unpack(f"<{len(data) // 8}Q", data[:len(data) // 16 * 16])
    return dict(zip(words[::2], words[1::2]))


def _ptrace(request: int, pid: int, addr, data) -> int:
    ctypes.set_errno(0)
    result = _libc.ptrace(request, pid, addr, data)
    if result == -1 and ctypes.get_errno():
        raise TargetError(f"could not run PID {pid} up to its loaded libraries: "
                          f"{os.strerror(ctypes.get_errno())}")
    return result


def _peek(pid: int, address: int) -> int:
    return _ptrace(PTRACE_PEEKDATA, pid, address, None)


def _poke(pid: int, address: int, word: int) -> None:
    _ptrace(PTRACE_POKEDATA, pid, address, ctypes.c_long(word).value)


def _registers(pid: int):
    registers = _Registers()
    _ptrace(PTRACE_GETREGS, pid, None, ctypes.addressof(registers))
    return registers


def _set_registers(pid: int, registers) -> None:
    _ptrace(PTRACE_SETREGS, pid, None, ctypes.addressof(registers))
