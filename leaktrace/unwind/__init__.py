"""Unwinding user stacks through code built without frame pointers.

cfi.py interprets DWARF call-frame information (.eh_frame) into the compact
rows bpf/unwind.h walks; tables.py builds and caches them per binary
(build-id); spaces.py says which table covers which addresses of a process;
loader.py writes all of it into the BPF maps and reads the stacks back.
Only loader.py touches bcc objects (passed in, never imported).
"""
from .loader import Unwinder, is_unwound
from .tables import TableUnavailable, UnwindTable, table_for

UNWIND_MODES = ("auto", "fp", "cfi")

__all__ = ["UNWIND_MODES", "TableUnavailable", "Unwinder", "UnwindTable", "is_unwound", "table_for"]
