"""The first bytes of outstanding kernel objects, read on demand.

kernel_alloc.c's read_contents() runs when leaktrace itself calls getppid()
(the syscalls:sys_enter_getppid tracepoint; other processes' calls return at
once). It copies the first CONTENT_BYTES of each requested object that is
still recorded as outstanding in `allocs`, bounded by the object's size: an
address leaktrace did not record, or one freed since, is never read. The
tables those objects point at are read the same way, only inside the
kernel's read-only and data sections (bounds from kallsyms).
Kernels without that tracepoint, or that refuse bpf_probe_read_kernel there,
leave contents off, and `problem` says why.
"""
from __future__ import annotations

import ctypes
import os
from typing import Dict, Iterable, Optional, Tuple

from ..symbols.kallsyms import KernelSymbols

BATCH = 64  # CONTENT_BATCH in bpf/kernel_common.h
SPACE_SLAB = 0  # enum addr_space
SPACE_KERNEL_DATA = 255  # kernel_alloc.c
EVENT = "syscalls:sys_enter_getppid"
# The kernel's read-only data and data sections lie between these (x86-64, arm64).
DATA_BOUNDS = ("__start_rodata", "__init_begin")


class ContentReader:
    def __init__(self, bpf):
        self.bpf = bpf
        self.problem = ""  # why contents are off, in words
        self._attached = False

    def attach(self, data_bounds: Optional[Tuple[int, int]] = None) -> bool:
        """Load and attach read_contents(); False (and problem) when the kernel refuses.
        data_bounds: where tables may be read (none when not given)."""
        try:
            self.bpf.attach_tracepoint(tp=EVENT, fn_name=b"read_contents")
        except Exception as error:  # bcc raises Exception for both load and attach failures
            self.problem = (f"object contents are off: this kernel refuses the reader on {EVENT} "
                            f"(bpf_probe_read_kernel from a tracepoint): {str(error).splitlines()[0]}")
            return False
        if data_bounds:
            table = self.bpf["kernel_data"]
            bounds = table.Leaf()
            bounds.start, bounds.end = data_bounds
            table[ctypes.c_int(0)] = bounds
        self._attached = True
        return True

    def read(self, addresses: Iterable[int], space: int = SPACE_SLAB) -> Dict[int, bytes]:
        """First bytes per address, for those the program may read."""
        if not self._attached:
            return {}
        requests, heads = self.bpf["content_requests"], self.bpf["content_heads"]
        wanted = list(dict.fromkeys(addresses))
        found: Dict[int, bytes] = {}
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start:start + BATCH]
            for index in range(BATCH):
                key = requests.Leaf()
                key.addr = batch[index] if index < len(batch) else 0
                key.space = space
                requests[ctypes.c_int(index)] = key
            os.getppid()  # runs read_contents() on this CPU, now
            for index, address in enumerate(batch):
                head = heads[ctypes.c_int(index)]
                if head.len:
                    found[address] = bytes(head.bytes[:head.len])
        return found


def data_bounds(symbols: KernelSymbols) -> Optional[Tuple[int, int]]:
    """The kernel's read-only and data sections, per kallsyms; None if unknown."""
    start, end = (symbols.address_of(name) for name in DATA_BOUNDS)
    return (start, end) if start and end and start < end else None
