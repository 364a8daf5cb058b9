"""Read and delete BPF hash map entries a few thousand at a time.

One BPF_MAP_LOOKUP_BATCH call per chunk instead of two syscalls per entry;
buffers sized to the chunk, not to the map's capacity (bcc's own
items_lookup_batch allocates max_entries keys and values on every read).
Kernels before 5.6 have no batch operations: then entries are read and
deleted one by one.
"""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Callable, List, Sequence, TypeVar

T = TypeVar("T")
CHUNK = 4096
# What a kernel without batch operations answers (524: its internal ENOTSUPP).
NO_BATCH = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, 524)


def _lib():
    from bcc.libbcc import lib  # only after features.import_bcc() succeeded
    return lib


def read_all(table, convert: Callable[[object, object], T]) -> List[T]:
    """convert(key, value) of every entry; key and value are only valid during the call."""
    try:
        return _read_batched(table, convert)
    except OSError as exc:
        if exc.errno not in NO_BATCH:
            raise
    return [convert(key, value) for key, value in table.items()]


def _read_batched(table, convert) -> List[T]:
    lib = _lib()
    chunk = CHUNK
    found: List[T] = []
    token_in, token_out = ctypes.c_uint32(0), ctypes.c_uint32(0)
    first = True
    while True:
        keys, values = (table.Key * chunk)(), (table.Leaf * chunk)()
        count = ctypes.c_uint32(chunk)
        result = lib.bpf_lookup_batch(table.map_fd, None if first else ctypes.byref(token_in),
                                      ctypes.byref(token_out), keys, values, ctypes.byref(count))
        error = ctypes.get_errno() if result else 0
        for index in range(count.value):
            found.append(convert(keys[index], values[index]))
        if error == errno.ENOENT:
            return found  # the last chunk
        if error == errno.ENOSPC and count.value == 0:
            chunk *= 2  # one hash bucket holds more entries than a chunk
            continue
        if error:
            raise OSError(error, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(error)}")
        token_in.value = token_out.value
        first = False


def delete(table, keys: Sequence[object]) -> None:
    """Delete these keys (missing ones are skipped)."""
    if not keys:
        return
    lib = _lib()
    for start in range(0, len(keys), CHUNK):
        part = keys[start:start + CHUNK]
        array = (table.Key * len(part))(*part)
        count = ctypes.c_uint32(len(part))
        if lib.bpf_delete_batch(table.map_fd, array, ctypes.byref(count)) == 0:
            continue
        # Without batch deletes, or a key already gone: one by one.
        for key in part[count.value:]:
            try:
                del table[key]
            except KeyError:
                pass
