"""The raw bpf(2) system call, for what bcc 0.26 does not offer (uprobe links)
or must not be trusted with (the first privilege check: bcc prints its own
multi-line errors). Callers pack the union bpf_attr themselves."""
from __future__ import annotations

import ctypes
import os
import platform

BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_LINK_CREATE = 0, 5, 28
_NUMBER = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 128  # enough for every command used here; the rest is zero


def available() -> bool:
    return platform.machine() in _NUMBER


def bpf(command: int, attr: bytes) -> int:
    """bpf(command, attr): the new fd (or 0), or OSError with the kernel's errno."""
    buffer = ctypes.create_string_buffer(attr, max(len(attr), _ATTR_SIZE))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(_NUMBER[platform.machine()], command, buffer, len(buffer))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result
