"""Per-program statistics the kernel keeps for a loaded BPF program.

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
from typing import Optional

BPF_OBJ_GET_INFO_BY_FD = 15
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
RECURSION_MISSES_OFFSET = 208
PROG_INFO_SIZE = 232

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _InfoByFd(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def recursion_misses(prog_fd: int) -> Optional[int]:
    """The program's recursion_misses, or None when this kernel does not report it."""
    number = _SYSCALL_BPF.get(platform.machine())
    if number is None or prog_fd < 0:
        return None
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    attr = _InfoByFd(prog_fd, PROG_INFO_SIZE, ctypes.addressof(info))
    if _libc.syscall(number, BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        return None
    if attr.info_len < RECURSION_MISSES_OFFSET + 8:
        return None
    return ctypes.c_uint64.from_buffer_copy(info.raw, RECURSION_MISSES_OFFSET).value
