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
    # "alloc", "resize" (frees `pointer`, returns a new block), "free", or "unwind"
    # (a C++ exception starts: see `throws`)
    action: str
    family: str  # "heap" (the allocator's), "mmap" (system-call wrappers) or "unwind"
    # "pointer", "status" (0 and the block in *out), "mapping" (MAP_FAILED/-errno),
    # "size" (the block's new size, in place), "none"
    returns: str
    symbols: Tuple[str, ...] = ()  # symbols to hook, any the object defines; () = (name,)
    # "allocator": the object that defines malloc; "libc": a libc wrapper;
    # "unwinder": libgcc's, hooked only where a row that throws is
    defined_by: str = "allocator"
    size: Optional[int] = None
    count: Optional[int] = None  # elements: the block is count * size bytes
    align: Optional[int] = None
    pointer: Optional[int] = None  # the block freed or resized
    out: Optional[int] = None  # where the new block's address is stored
    flags: Optional[int] = None
    frame_names: Tuple[str, ...] = ()  # other names its code has in stacks (internal aliases)
    # May throw (C++ new): an exception cannot unwind through the return
    # probe's trampoline, so the entry probe stays at the function's start,
    # where it reads the true return address, and the "unwind" row puts it
    # back when an exception starts inside the call.
    throws: bool = False

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
        return ARGUMENT_REGISTERS[:max(used) + 1] if used else ()


# C++'s operator new and delete, in every variant; hooked where the allocator
# defines them (jemalloc, tcmalloc, mimalloc). libstdc++'s own run malloc and
# free, which are hooked already.
_NEW = ("_Znwm", "_Znam", "tc_new", "tc_newarray", "mi_new")
_NEW_NOTHROW = ("_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "tc_new_nothrow", "tc_newarray_nothrow",
                "mi_new_nothrow")
_NEW_ALIGNED = ("_ZnwmSt11align_val_t", "_ZnamSt11align_val_t", "tc_new_aligned", "tc_newarray_aligned",
                "mi_new_aligned")
_NEW_ALIGNED_NOTHROW = ("_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
                        "tc_new_aligned_nothrow", "tc_newarray_aligned_nothrow", "mi_new_aligned_nothrow")
_DELETE = tuple(f"_Zd{kind}Pv{args}" for kind in "la" for args in (
    "", "m", "RKSt9nothrow_t", "St11align_val_t", "mSt11align_val_t", "St11align_val_tRKSt9nothrow_t")) + (
    "tc_delete", "tc_deletearray", "tc_delete_sized", "tc_deletearray_sized", "tc_delete_nothrow",
    "tc_deletearray_nothrow", "tc_delete_aligned", "tc_deletearray_aligned", "tc_delete_sized_aligned",
    "tc_deletearray_sized_aligned", "tc_delete_aligned_nothrow", "tc_deletearray_aligned_nothrow",
    "mi_free_size", "mi_free_aligned", "mi_free_size_aligned")

# tc_*, mi_* and je_* names are the allocators' own entry points (tcmalloc's and
# most of mimalloc's are aliases of the standard ones: one probe per address).
FUNCTIONS: Tuple[AllocFunction, ...] = (
    AllocFunction("malloc", "alloc", "heap", "pointer", size=0,
                  symbols=("malloc", "tc_malloc", "mi_malloc", "mi_zalloc", "je_malloc"),
                  frame_names=("__libc_malloc",)),
    AllocFunction("calloc", "alloc", "heap", "pointer", count=0, size=1,
                  symbols=("calloc", "tc_calloc", "mi_calloc", "mi_mallocn", "je_calloc"),
                  frame_names=("__libc_calloc",)),
    AllocFunction("realloc", "resize", "heap", "pointer", pointer=0, size=1,
                  symbols=("realloc", "tc_realloc", "mi_realloc", "mi_reallocf", "je_realloc"),
                  frame_names=("__libc_realloc",)),
    AllocFunction("reallocarray", "resize", "heap", "pointer", pointer=0, count=1, size=2,
                  symbols=("reallocarray", "mi_reallocarray", "mi_reallocn")),
    AllocFunction("free", "free", "heap", "none", pointer=0,
                  symbols=("free", "cfree", "tc_free", "tc_cfree", "mi_free", "je_free")),
    AllocFunction("posix_memalign", "alloc", "heap", "status", out=0, align=1, size=2,
                  symbols=("posix_memalign", "tc_posix_memalign", "mi_posix_memalign", "je_posix_memalign")),
    AllocFunction("aligned_alloc", "alloc", "heap", "pointer", align=0, size=1,
                  symbols=("aligned_alloc", "mi_aligned_alloc", "je_aligned_alloc")),
    AllocFunction("memalign", "alloc", "heap", "pointer", align=0, size=1,
                  symbols=("memalign", "tc_memalign", "mi_memalign", "je_memalign"),
                  frame_names=("__libc_memalign",)),
    AllocFunction("valloc", "alloc", "heap", "pointer", size=0,
                  symbols=("valloc", "tc_valloc", "mi_valloc", "je_valloc")),
    AllocFunction("pvalloc", "alloc", "heap", "pointer", size=0, symbols=("pvalloc", "tc_pvalloc", "mi_pvalloc")),
    AllocFunction("new", "alloc", "heap", "pointer", size=0, symbols=_NEW, throws=True),
    AllocFunction("new_nothrow", "alloc", "heap", "pointer", size=0, symbols=_NEW_NOTHROW),
    AllocFunction("new_aligned", "alloc", "heap", "pointer", size=0, align=1, symbols=_NEW_ALIGNED, throws=True),
    AllocFunction("new_aligned_nothrow", "alloc", "heap", "pointer", size=0, align=1,
                  symbols=_NEW_ALIGNED_NOTHROW),
    AllocFunction("delete", "free", "heap", "none", pointer=0, symbols=_DELETE),
    # jemalloc's own API (nallocx and sallocx only compute sizes).
    AllocFunction("mallocx", "alloc", "heap", "pointer", size=0, flags=1, symbols=("mallocx", "je_mallocx")),
    AllocFunction("rallocx", "resize", "heap", "pointer", pointer=0, size=1, flags=2,
                  symbols=("rallocx", "je_rallocx")),
    # Resizes in place: the block keeps its address, and the size it returns.
    AllocFunction("xallocx", "resize", "heap", "size", pointer=0, size=1, flags=3,
                  symbols=("xallocx", "je_xallocx")),
    AllocFunction("sdallocx", "free", "heap", "none", pointer=0,
                  symbols=("sdallocx", "je_sdallocx", "tc_free_sized")),
    AllocFunction("dallocx", "free", "heap", "none", pointer=0, symbols=("dallocx", "je_dallocx")),
    # mimalloc's aligned allocations that have no standard twin (size first).
    AllocFunction("malloc_aligned", "alloc", "heap", "pointer", size=0, align=1,
                  symbols=("mi_malloc_aligned", "mi_zalloc_aligned")),
    # Where every C++ throw starts unwinding (libgcc): puts back the return
    # address of a throwing new that the exception leaves.
    AllocFunction("raise_exception", "unwind", "unwind", "none", defined_by="unwinder",
                  symbols=("_Unwind_RaiseException",)),
    AllocFunction("mmap", "alloc", "mmap", "mapping", defined_by="libc", size=1, flags=3,
                  frame_names=("mmap64",)),
    AllocFunction("munmap", "free", "mmap", "none", defined_by="libc", pointer=0),
    AllocFunction("mremap", "resize", "mmap", "mapping", defined_by="libc", pointer=0, size=2),
)

# Allocation entry points in stacks that no row hooks here: libstdc++'s
# operator new (it calls malloc), the kernel's kmalloc. A stack's title and a
# plot's legend name their caller instead.
OTHER_ALLOCATOR_FRAMES = tuple(
    f"operator {op}(unsigned long{extra})" for op in ("new", "new[]")
    for extra in ("", ", std::nothrow_t const&", ", std::align_val_t", ", std::align_val_t, std::nothrow_t const&")
) + ("_Znwm", "_Znam", "__kmalloc", "kmalloc")

BY_NAME: Dict[str, AllocFunction] = {f.name: f for f in FUNCTIONS}

HEAP_FUNCTIONS = tuple(f.name for f in FUNCTIONS if f.family == "heap")
MMAP_FUNCTIONS = tuple(f.name for f in FUNCTIONS if f.family == "mmap")
# Entry probes that release blocks: attached before those that record them.
FREE_SIDE = tuple(f.name for f in FUNCTIONS if f.action == "free")
# Entry probes that undo a return probe an exception leaves: attached before
# the probes of the functions that throw.
UNWIND_SIDE = tuple(f.name for f in FUNCTIONS if f.action == "unwind")

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
