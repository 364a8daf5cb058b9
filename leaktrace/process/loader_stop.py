"""Impure: let a command `run` started run until its dynamic loader has mapped
and relocated its libraries, and stop it there (x86-64, glibc's loader).

Why: `run` loads the unwind tables while the command is stopped at exec, when
only the program and ld.so are mapped. libc and the other libraries arrive a
moment later, so the first allocations (library constructors, the start of
main) would be walked before their tables are in and their stacks cut.

How: the command is our tracee from PTRACE_TRACEME until the caller detaches
it, so it is stepped from one system call to the next (PTRACE_SYSCALL), and
stopped at the first one made from code outside ld.so. Until then only the
loader runs, mapping and relocating the libraries; the first allocation
cannot come before it, since the allocator asks the kernel for its first
memory (brk, mmap) before it returns a block, and its stack is walked at the
return. Nothing is written into the command: if leaktrace dies meanwhile, the
kernel lets it go and it runs on untraced. A static program, a loader that is
its own libc (musl's: every call of the program's allocator comes from it),
or another architecture: find_loader says None and the caller keeps the
tables of the exec stop.

Contract: find_loader(process) -> Loader or None, while the command is
stopped at exec. run_until_loaded(pid, loader, idle) resumes it and returns
None once it is stopped again at that point (the caller loads the tables and
detaches), or its wait status if it ended first. If the point is not reached
within PATIENCE_S, the command is stopped with SIGSTOP instead, which the
detach discards.
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

PTRACE_GETREGS, PTRACE_SYSCALL, PTRACE_SETOPTIONS = 12, 24, 0x4200
PTRACE_O_TRACESYSGOOD = 1  # system call stops say SIGTRAP | 0x80
SYSCALL_STOP = signal.SIGTRAP | 0x80
AT_BASE = 7  # auxv: where the program interpreter (ld.so) is loaded
RIP = 16  # index in struct user_regs_struct (27 words)
PATIENCE_S = 10.0  # glibc's loader is done in milliseconds; this only bounds a stranger one
POLL_S = 0.01

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long
_Registers = ctypes.c_uint64 * 27


@dataclass(frozen=True)
class Loader:
    start: int  # the lowest and highest address ld.so's file is mapped at
    end: int

    def runs(self, address: int) -> bool:
        return self.start <= address < self.end


def find_loader(process: TracedProcess) -> Optional[Loader]:
    """Where the stopped command's loader is mapped; None if there is none to wait for."""
    if platform.machine() != "x86_64":
        return None
    base = _auxv(process.pid).get(AT_BASE, 0)
    maps = process.maps(fresh=True)
    path = next((m.path for m in maps if m.start == base and m.path), None)
    if not base or path is None:
        return None  # a static program: no loader, nothing maps late
    try:
        if open_elf_in_root(process.root, path).find_function("malloc") is not None:
            return None  # the loader is the libc (musl): its system calls never say it is done
    except LeaktraceError:
        return None
    mine = [m for m in maps if m.path == path]
    return Loader(min(m.start for m in mine), max(m.end for m in mine))


def run_until_loaded(pid: int, loader: Loader, idle: Callable[[float], None] = time.sleep,
                     patience_s: float = PATIENCE_S) -> Optional[int]:
    """Resume the stopped command until a system call comes from outside its loader; None
    once it is stopped there (or by the SIGSTOP of the patience), or its wait status if it
    ended first."""
    _ptrace(PTRACE_SETOPTIONS, pid, None, PTRACE_O_TRACESYSGOOD)
    deadline, stopping, deliver = time.monotonic() + patience_s, False, 0
    while True:
        _ptrace(PTRACE_SYSCALL, pid, None, deliver)
        status = _wait(pid, idle, None if stopping else deadline)
        if status is None:  # too long: stop it another way
            os.kill(pid, signal.SIGSTOP)
            stopping = True
            status = _wait(pid, idle, None)
        if not os.WIFSTOPPED(status):
            return status
        stopped_by, deliver = os.WSTOPSIG(status), 0
        if stopped_by == SYSCALL_STOP:
            if not stopping and not loader.runs(_registers(pid)[RIP]):
                return None
        elif stopping and stopped_by == signal.SIGSTOP:
            return None  # taken here: the detach does not pass it on
        else:
            deliver = stopped_by  # the command's own signal: pass it on


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


def _registers(pid: int):
    registers = _Registers()
    _ptrace(PTRACE_GETREGS, pid, None, ctypes.addressof(registers))
    return registers

