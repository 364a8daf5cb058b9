"""Unwinding user stacks through code built without frame pointers.

cfi.py interprets DWARF call-frame information (.eh_frame) into the compact
rows bpf/unwind.h walks; tables.py builds and caches them per binary
(build-id); spaces.py says which table covers which addresses of a process.
Nothing here touches the kernel: probes/unwinder.py writes all of it into
the BPF maps and reads the stacks back.
"""
from .tables import TableUnavailable, UnwindTable, table_for

UNWIND_MODES = ("auto", "fp", "cfi")

__all__ = ["UNWIND_MODES", "TableUnavailable", "UnwindTable", "table_for"]
