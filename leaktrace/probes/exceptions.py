"""C++ exceptions and the return probes on operator new.

A return probe replaces the return address of the call it watches with the
kernel's trampoline; an exception thrown out of that call (std::bad_alloc
from the allocator's operator new) finds no unwind table for the trampoline
and the program terminates. So the throwing variants of new are probed only
where that cannot happen: bpf/user_alloc.c's raise_exception_enter puts the
return address back when a throw starts inside them, which needs the
bpf_probe_write_user helper (refused by kernels in lockdown, and then the
handler does not load). Without it they are left alone, and the report says
what that misses, unless --probe-throwing-new accepts the risk.

choose() is pure: hooks in, hooks kept and the note out.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, List, Optional, Sequence, Tuple

from .allocator import Hook
from .alloc_functions import BY_NAME, UNWIND_SIDE

RESTORER = "raise_exception_enter"


def throwing(hooks: Sequence[Hook]) -> List[Hook]:
    return [hook for hook in hooks if BY_NAME[hook.function].throws]


def choose(hooks: Sequence[Hook], restorable: bool, forced: bool) -> Tuple[List[Hook], Optional[str]]:
    """(hooks to attach, a note for the report or None).

    restorable: the kernel loaded raise_exception_enter; forced: --probe-throwing-new.
    """
    risky = throwing(hooks)
    if not risky or restorable:
        return list(hooks), None
    names = ", ".join(dict.fromkeys(hook.symbol for hook in risky))
    without_restorer = [hook for hook in hooks if hook.function not in UNWIND_SIDE]
    if forced:
        return without_restorer, (
            f"--probe-throwing-new: {names} are probed although this kernel refuses to put a return "
            "address back (bpf_probe_write_user, refused in lockdown): a std::bad_alloc thrown out of "
            "them terminates the program")
    return [hook for hook in without_restorer if hook not in risky], (
        f"the throwing operator new ({names}) is not hooked: a std::bad_alloc thrown out of a return "
        "probe cannot unwind, and this kernel refuses to put the return address back "
        "(bpf_probe_write_user, refused in lockdown); what is allocated with it is missing here "
        "(nothrow new and malloc are traced). --probe-throwing-new hooks it anyway, if the "
        "program never catches std::bad_alloc from new")


@contextlib.contextmanager
def verifier_log_hidden() -> Iterator[None]:
    """bcc prints a refused program's verifier log on fd 2: the refusal is an
    expected answer here (the report's note says what it means), not an error."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
