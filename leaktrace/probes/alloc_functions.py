"""The allocator functions leaktrace hooks: one row each, the only list of them.

A row says which symbols name the function, which argument holds what, what
it returns, what it does to memory and which object defines it. Everything
else is derived from the rows: the BPF side's function numbers (FN_<NAME>,
FN_LAST_HEAP, FN_LAST, passed to bpf/user_alloc.c as -D flags by defines()),
the handler each probe runs, the registers an entry handler reads (probe
placement must keep them intact), the names a --trace line prints, and the
symbols a stack's title skips. Adding a function is one row here plus its
handlers in bpf/user_alloc.c (`<name>_enter`, `<name>_exit`).

Pure data: nothing here imports bcc.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# System V x86-64 integer argument registers, in order.
ARGUMENT_REGISTERS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")


@dataclass(frozen=True)
class AllocFunction:
    """One allocator entry point. Argument fields are 0-based positions."""

    name: str  # leaktrace's name for it: handlers are <name>_enter / <name>_exit
    action: str  # "alloc", "resize" (frees `pointer`, returns a new block) or "free"
    family: str  # "heap" (the allocator's) or "mmap" (system-call wrappers)
    returns: str  # "pointer", "status" (0 and the block in *out), "mapping" (MAP_FAILED/-errno), "none"
    symbols: Tuple[str, ...] = ()  # symbols to hook, any the object defines; () = (name,)
    defined_by: str = "allocator"  # "allocator": the object that defines malloc; "libc": a libc wrapper
    size: Optional[int] = None
    count: Optional[int] = None  # elements: the block is count * size bytes
    align: Optional[int] = None
    pointer: Optional[int] = None  # the block freed or resized
    out: Optional[int] = None  # where the new block's address is stored
    flags: Optional[int] = None
    frame_names: Tuple[str, ...] = ()  # other names its code has in stacks (internal aliases)

    @property
    def hooked_symbols(self) -> Tuple[str, ...]:
        return self.symbols or (self.name,)

    @property
    def has_return(self) -> bool:
        """Whether a return probe is needed: the result is known only then."""
        return self.returns != "none"

    @property
    def entry_handler(self) -> str:
        return f"{self.name}_enter"

    @property
    def exit_handler(self) -> Optional[str]:
        return f"{self.name}_exit" if self.has_return else None

    @property
    def registers(self) -> Tuple[str, ...]:
        """The argument registers the entry handler reads."""
        used = [p for p in (self.size, self.count, self.align, self.pointer, self.out, self.flags)
                if p is not None]
        return ARGUMENT_REGISTERS[:max(used) + 1]


FUNCTIONS: Tuple[AllocFunction, ...] = (
    AllocFunction("malloc", "alloc", "heap", "pointer", size=0,
                  frame_names=("__libc_malloc", "je_malloc", "tc_malloc", "mi_malloc")),
    AllocFunction("calloc", "alloc", "heap", "pointer", count=0, size=1, frame_names=("__libc_calloc",)),
    AllocFunction("realloc", "resize", "heap", "pointer", pointer=0, size=1, frame_names=("__libc_realloc",)),
    AllocFunction("reallocarray", "resize", "heap", "pointer", pointer=0, count=1, size=2),
    AllocFunction("free", "free", "heap", "none", pointer=0),
    AllocFunction("posix_memalign", "alloc", "heap", "status", out=0, align=1, size=2),
    AllocFunction("aligned_alloc", "alloc", "heap", "pointer", align=0, size=1),
    AllocFunction("memalign", "alloc", "heap", "pointer", align=0, size=1, frame_names=("__libc_memalign",)),
    AllocFunction("valloc", "alloc", "heap", "pointer", size=0),
    AllocFunction("pvalloc", "alloc", "heap", "pointer", size=0),
    AllocFunction("mmap", "alloc", "mmap", "mapping", defined_by="libc", size=1, flags=3,
                  frame_names=("mmap64",)),
    AllocFunction("munmap", "free", "mmap", "none", defined_by="libc", pointer=0),
    AllocFunction("mremap", "resize", "mmap", "mapping", defined_by="libc", pointer=0, size=2),
)

# Allocation entry points in stacks that no row hooks (yet): C++'s operator
# new, the kernel's kmalloc. A plot's legend names their caller instead.
OTHER_ALLOCATOR_FRAMES = (
    "operator new(unsigned long)", "operator new[](unsigned long)", "_Znwm", "_Znam",
    "__kmalloc", "kmalloc",
)

BY_NAME: Dict[str, AllocFunction] = {f.name: f for f in FUNCTIONS}

HEAP_FUNCTIONS = tuple(f.name for f in FUNCTIONS if f.family == "heap")
MMAP_FUNCTIONS = tuple(f.name for f in FUNCTIONS if f.family == "mmap")
# Entry probes that release blocks: attached before those that record them.
FREE_SIDE = tuple(f.name for f in FUNCTIONS if f.action == "free")

# Function number -> row, for what carries state from entry to return: heap
# functions first, so FN_LAST_HEAP closes a contiguous range (HEAP_FN_BITS).
# 0 is a free in --trace events.
_NUMBERED = [f for f in FUNCTIONS if f.has_return and f.family == "heap"] + [
    f for f in FUNCTIONS if f.has_return and f.family != "heap"]
NUMBERS: Dict[str, int] = {f.name: number for number, f in enumerate(_NUMBERED, start=1)}

# function -> (entry handler, return handler or None).
HANDLERS: Dict[str, Tuple[str, Optional[str]]] = {f.name: (f.entry_handler, f.exit_handler) for f in FUNCTIONS}
ARG_REGS: Dict[str, Tuple[str, ...]] = {f.name: f.registers for f in FUNCTIONS}
FN_NAMES: Dict[int, str] = {0: "free", **{number: name for name, number in NUMBERS.items()}}
# Allocator entry points: a stack's title names the caller, not these.
ALLOCATOR_SYMBOLS = frozenset(
    [s for f in FUNCTIONS for s in f.hooked_symbols + f.frame_names] + list(OTHER_ALLOCATOR_FRAMES))


def defines() -> Dict[str, int]:
    """The function numbers bpf/user_alloc.c is compiled with (-D flags)."""
    numbers = {f"FN_{name.upper()}": number for name, number in NUMBERS.items()}
    last_heap = max(NUMBERS[f.name] for f in _NUMBERED if f.family == "heap")
    return {**numbers, "FN_LAST_HEAP": last_heap, "FN_LAST": len(_NUMBERED)}
