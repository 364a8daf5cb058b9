"""Per-program statistics the kernel keeps for a loaded BPF program.

run_time_ns and run_cnt are the CPU time spent in the program and how often
it ran, counted only while run-time statistics are enabled (enable_run_stats()
holds them on for as long as its descriptor is open, since Linux 5.8; the
kernel.bpf_stats_enabled sysctl is the system-wide switch).
recursion_misses counts the times the kernel skipped the program because a
BPF program was already running on that CPU (since Linux 5.12 for tracing
programs, 6.2 for tracepoints). For a free tracepoint each miss is a free
leaktrace never saw. Read with BPF_OBJ_GET_INFO_BY_FD; the offsets are those
of struct bpf_prog_info in linux/bpf.h, which only ever grows.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Optional, Tuple

BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
RUN_TIME_NS_OFFSET, RUN_CNT_OFFSET = 192, 200
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
RECURSION_MISSES_OFFSET = 208
PROG_INFO_SIZE = 232

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _InfoByFd(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def _prog_info(prog_fd: int, needed: int) -> Optional[bytes]:
    """struct bpf_prog_info of a program, when the kernel fills `needed` bytes of it."""
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None or prog_fd < 0:
        return None
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    attr = _InfoByFd(prog_fd, PROG_INFO_SIZE, ctypes.addressof(info))
    if _libc.syscall(number, BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        return None
    return info.raw if attr.info_len >= needed else None


def _u64(raw: bytes, offset: int) -> int:
    return ctypes.c_uint64.from_buffer_copy(raw, offset).value


def recursion_misses(prog_fd: int) -> Optional[int]:
    """The program's recursion_misses, or None when this kernel does not report it."""
    info = _prog_info(prog_fd, RECURSION_MISSES_OFFSET + 8)
    return None if info is None else _u64(info, RECURSION_MISSES_OFFSET)


def run_stats(prog_fd: int) -> Optional[Tuple[int, int]]:
    """(run_time_ns, run_cnt) of the program, or None when this kernel does not report them."""
    info = _prog_info(prog_fd, RUN_CNT_OFFSET + 8)
    return None if info is None else (_u64(info, RUN_TIME_NS_OFFSET), _u64(info, RUN_CNT_OFFSET))


def enable_run_stats() -> Optional[int]:
    """A descriptor that keeps run-time statistics on until closed; None when
    the kernel refuses (before 5.8, or without CAP_SYS_ADMIN)."""
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None:
        return None
    kind = ctypes.c_uint32(BPF_STATS_RUN_TIME)
    fd = _libc.syscall(number, BPF_ENABLE_STATS, ctypes.byref(kind), ctypes.sizeof(kind))
    return fd if fd >= 0 else None


def run_stats_on_globally(path: str = "/proc/sys/kernel/bpf_stats_enabled") -> bool:
    """Whether the kernel.bpf_stats_enabled sysctl keeps the statistics on for everyone."""
    try:
        with open(path) as sysctl:
            return sysctl.read().strip() == "1"
    except OSError:
        return False
