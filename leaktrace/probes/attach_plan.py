"""Which entry points of a hook plan get probes, where in each function, and in which order."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

from ..base.errors import LeaktraceError
from ..symbols import ElfError, open_elf
from .alloc_functions import ARG_REGS, BY_NAME, FREE_SIDE, HANDLERS, UNWIND_SIDE
from .allocator import Hook
from .placement_cache import placement_for


def attach_order(hooks: Sequence[Hook]) -> List[Tuple[Hook, str]]:
    """(hook, "return" | "entry") in the order to attach them.

    A call that enters between its entry probe and its return probe would
    leave a mark that never clears, and a block allocated before free is
    hooked would never be seen freed: so every return probe first, then the
    free side, then the entry probes that start a recording."""
    before = FREE_SIDE + UNWIND_SIDE
    returns = [(hook, "return") for hook in hooks if HANDLERS[hook.function][1]]
    frees = [(hook, "entry") for hook in hooks if HANDLERS[hook.function][0] and hook.function in before]
    entries = [(hook, "entry") for hook in hooks
               if HANDLERS[hook.function][0] and hook.function not in before]
    return returns + frees + entries


def function_address(path: str, symbol: str) -> Optional[int]:
    """Where `symbol` starts in the object at path; None when unknown."""
    try:
        found = open_elf(path).find_function(symbol)
    except (ElfError, OSError):
        return None
    return found[0] if found else None


def distinct_entry_points(path: str, hooks: Sequence[Hook],
                          address_of: Callable[[str, str], Optional[int]] = function_address) -> List[Hook]:
    """hooks without the aliases of one already listed (same address in path).

    Two probes on one address both fire on every call: Debian's glibc defines
    memalign and aligned_alloc at one address, tcmalloc's tc_malloc is malloc,
    so each call would be recorded twice (allocs +2, replaced +1). The first
    symbol in table order is kept; symbols whose address is unknown are all kept.
    """
    seen = set()
    kept = []
    for hook in hooks:
        address = address_of(path, hook.symbol)
        if address is not None:
            if address in seen:
                continue
            seen.add(address)
        kept.append(hook)
    return kept


def emulated_offset(hook: Hook) -> int:
    """Where the entry probe costs a trap, not a single-step (see placement.py);
    at the start for a function that throws (it reads the return address there)."""
    if BY_NAME[hook.function].throws:
        return 0
    try:
        return placement_for(hook.path, hook.symbol, ARG_REGS[hook.function]).offset
    except LeaktraceError:
        return 0
