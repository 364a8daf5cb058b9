"""Impure: stop a process's threads, read their registers and the process's memory.

Frozen(pid) stops every thread with PTRACE_SEIZE + PTRACE_INTERRUPT: unlike
SIGSTOP, the stop is invisible to the process's parent and job control, and
the kernel resumes the threads by itself if leaktrace dies while they are
stopped. A signal that arrives during the stop is delivered at the detach,
not lost. Blocked system calls restart transparently. Threads started while
others are being stopped are found by listing /proc/PID/task again.

read_segments() copies memory with process_vm_readv, one call per run of
resident pages (from /proc/PID/pagemap): pages never touched are not read (they
would only read as zeros, and reading them would map the zero page into the
target). Swapped-out pages are read, which swaps them in. Nothing is ever
written to the target.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import time
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from ...base.errors import LeaktraceError
from ...process.targets import is_running
from .memory import Segment
from .regions import Region

PTRACE_DETACH, PTRACE_GETREGSET, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4204, 0x4206, 0x4207
PTRACE_EVENT_STOP = 128
NT_PRSTATUS = 1
WALL = 0x40000000  # __WALL: wait for threads (clones) too
CLD_TRAPPED = 4
# general-purpose registers (struct user_regs_struct / user_pt_regs), index of the stack pointer
REGISTERS = {"x86_64": (27, 19), "aarch64": (34, 31)}
STOP_TIMEOUT_S = 2.0
PAGEMAP_CHUNK = 1 << 18  # pages per pagemap read (1 GiB of address space, 2 MiB of entries)
READ_CHUNK = 1 << 24  # bytes per process_vm_readv call

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]
_libc.process_vm_readv.restype = ctypes.c_ssize_t


class ScanProblem(LeaktraceError):
    """Why a process was not scanned: one line in the report, not a failure."""


def _ptrace(request: int, tid: int, addr=None, data=None) -> int:
    if _libc.ptrace(request, tid, addr, data) == -1:
        return ctypes.get_errno()
    return 0


class Frozen:
    """Context manager: every thread of pid stopped; registers per thread.

    A thread that does not stop within stop_timeout_s (a long uninterruptible
    sleep) cannot be detached yet: it is left to release_late(), which each
    later Frozen calls first; leaktrace's exit releases it in any case."""

    def __init__(self, pid: int, stop_timeout_s: float = STOP_TIMEOUT_S):
        self.pid = pid
        self.stop_timeout_s = stop_timeout_s
        self.registers: Dict[int, Tuple[int, ...]] = {}
        self.frozen_s = 0.0
        self._signals: Dict[int, int] = {}  # stopped tid -> signal to deliver at the detach
        self._ours = _parent_of(pid) == os.getpid()  # `run`: its exit is ours to reap
        self._started = 0.0

    def __enter__(self) -> "Frozen":
        if platform.machine() not in REGISTERS:
            raise ScanProblem(f"reachability scans are not supported on {platform.machine()}")
        release_late()
        self._started = time.monotonic()
        try:
            self._stop_all()
            for tid in self._signals:
                self.registers[tid] = _registers(tid)
        except BaseException:
            self._resume_all()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._resume_all()

    @property
    def stack_pointers(self) -> List[int]:
        sp = REGISTERS[platform.machine()][1]
        return [words[sp] for words in self.registers.values()]

    def _stop_all(self) -> None:
        seen = set()
        while True:
            new = [tid for tid in _threads(self.pid) if tid not in seen]
            if not new:
                return
            seen.update(new)
            stopping, refused = [], None
            for tid in new:
                try:
                    if self._seize(tid):
                        stopping.append(tid)
                except ScanProblem as problem:
                    refused = problem  # the threads seized so far still need their stop
                    break
            deadline = time.monotonic() + self.stop_timeout_s
            late = [tid for tid in stopping if not self._wait_stop(tid, deadline)]
            if late:
                _LATE.update((tid, self._reaps(tid)) for tid in late)
                raise ScanProblem(f"thread {late[0]} of PID {self.pid} did not stop within "
                                  f"{self.stop_timeout_s:.0f} s (uninterruptible sleep?)")
            if refused:
                raise refused

    def _seize(self, tid: int) -> bool:
        error = _ptrace(PTRACE_SEIZE, tid)
        if error == errno.ESRCH:
            return False  # the thread exited meanwhile
        if error and not is_running(self.pid):  # a zombie cannot be seized either
            raise ScanProblem(f"PID {self.pid} exited before its memory was scanned")
        if error:
            raise ScanProblem(f"cannot stop PID {self.pid} to read it consistently: "
                              f"{os.strerror(error)} (is a debugger attached?)")
        _ptrace(PTRACE_INTERRUPT, tid)
        return True

    def _reaps(self, tid: int) -> bool:
        """May we reap tid's exit? Not our own child's: its parent code waits for it."""
        return not (self._ours and tid == self.pid)

    def _wait_stop(self, tid: int, deadline: float) -> bool:
        """Wait for tid's stop (or exit); False if the deadline passed first."""
        while True:
            stopped = _collect(tid, self._reaps(tid))
            if stopped is not None:
                if stopped >= 0:
                    self._signals[tid] = stopped
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)

    def _resume_all(self) -> None:
        for tid, signal in self._signals.items():
            _ptrace(PTRACE_DETACH, tid, None, signal)
        self._signals = {}
        self.frozen_s = time.monotonic() - self._started


# Threads seized that had not stopped when given up on: tid -> may reap its exit.
_LATE: Dict[int, bool] = {}


def release_late() -> None:
    """Detach the threads earlier scans gave up on, once they have stopped."""
    for tid, reaps in list(_LATE.items()):
        try:
            stopped = _collect(tid, reaps)
        except ChildProcessError:
            stopped = -1  # no longer ours to wait for
        if stopped is None:
            continue
        if stopped >= 0:
            _ptrace(PTRACE_DETACH, tid, None, stopped)
        del _LATE[tid]


def _collect(tid: int, reaps: bool):
    """None while tid runs; -1 once it exited; else the signal to deliver at the
    detach (0 for our own interrupt). Never blocks."""
    # WNOWAIT: look before consuming, so the exit of our own child stays for
    # its parent's waitpid (commands/run.py) to see.
    info = os.waitid(os.P_PID, tid, os.WSTOPPED | os.WEXITED | os.WNOWAIT | os.WNOHANG | WALL)
    if info is None:
        return None
    if info.si_code != CLD_TRAPPED:
        if reaps:
            os.waitpid(tid, WALL)
        return -1
    _, status = os.waitpid(tid, WALL)
    if status >> 16 != PTRACE_EVENT_STOP and os.WIFSTOPPED(status):
        return os.WSTOPSIG(status)  # a signal arrived meanwhile: deliver it
    return 0


def _threads(pid: int) -> List[int]:
    try:
        return [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        raise ScanProblem(f"PID {pid} exited before its memory was scanned") from None


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _registers(tid: int) -> Tuple[int, ...]:
    count = REGISTERS[platform.machine()][0]
    words = (ctypes.c_uint64 * count)()
    iov = _IoVec(ctypes.cast(words, ctypes.c_void_p), ctypes.sizeof(words))
    error = _ptrace(PTRACE_GETREGSET, tid, ctypes.c_void_p(NT_PRSTATUS), ctypes.byref(iov))
    if error:
        raise ScanProblem(f"cannot read the registers of thread {tid}: {os.strerror(error)}")
    return tuple(words)


def resident_runs(pid: int, regions: Sequence[Region]) -> List[Tuple[Region, int, int]]:
    """(region, start, end) of each run of pages that are present or swapped."""
    page = os.sysconf("SC_PAGE_SIZE")
    runs = []
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except FileNotFoundError:
        raise ScanProblem(f"PID {pid} exited before its memory was scanned") from None
    except PermissionError:
        raise ScanProblem(f"cannot read /proc/{pid}/pagemap (permission denied)") from None
    try:
        for region in regions:
            for start, end in _runs(fd, region.start, region.end, page):
                runs.append((region, start, end))
    finally:
        os.close(fd)
    return runs


def _runs(fd: int, start: int, end: int, page: int) -> Iterator[Tuple[int, int]]:
    first, last = start // page, (end + page - 1) // page
    for chunk in range(first, last, PAGEMAP_CHUNK):
        count = min(PAGEMAP_CHUNK, last - chunk)
        raw = os.pread(fd, 8 * count, 8 * chunk)
        entries = np.frombuffer(raw, dtype="<u8", count=len(raw) // 8)
        used = np.concatenate(([0], ((entries >> np.uint64(62)) != 0).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(used))
        for lo, hi in zip(edges[0::2].tolist(), edges[1::2].tolist()):
            yield max(start, (chunk + lo) * page), min(end, (chunk + hi) * page)


def read_segments(pid: int, runs: Sequence[Tuple[Region, int, int]]) -> List[Segment]:
    """A copy of each run; pages that cannot be read (gone meanwhile) are left out."""
    segments = []
    for region, start, end in runs:
        for lo in range(start, end, READ_CHUNK):
            segments.extend(_read(pid, lo, min(end, lo + READ_CHUNK), region.role))
    return segments


def _read(pid: int, start: int, end: int, role: str) -> List[Segment]:
    page = os.sysconf("SC_PAGE_SIZE")
    buffer = bytearray(end - start)
    done = 0
    out = []
    while start + done < end:
        got = _readv(pid, buffer, done, start + done, end - start - done)
        if got > 0:
            done += got
            continue
        error = ctypes.get_errno()
        if error == errno.ESRCH:
            raise ScanProblem(f"PID {pid} exited while its memory was scanned")
        if error == errno.EPERM:
            raise ScanProblem(f"cannot read the memory of PID {pid} (permission denied)")
        if done:
            out.append(Segment(start, bytes(buffer[:done]), role))
        skip = page - (start + done) % page  # an unreadable page: go on after it
        start, buffer, done = start + done + skip, buffer[done + skip:], 0
    if done:
        # the whole buffer, uncopied, in the common case
        out.append(Segment(start, buffer if done == len(buffer) else bytes(buffer[:done]), role))
    return out


def _readv(pid: int, buffer: bytearray, offset: int, address: int, size: int) -> int:
    view = (ctypes.c_char * size).from_buffer(buffer, offset)
    local = _IoVec(ctypes.cast(view, ctypes.c_void_p), size)
    remote = _IoVec(address, size)
    return _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
