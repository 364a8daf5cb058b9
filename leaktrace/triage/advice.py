"""The next command to run for a growing category.

Contract: next_step(verdict, growers, slabs_known) -> NextStep, pure. The
command names the layer that grew (a process, a slab cache, an allocation
kind), so the operator traces the right thing first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # verdicts imports this module
    from leaktrace.triage.verdicts import Verdict


@dataclass(frozen=True)
class NextStep:
    category: str
    command: str
    reason: str


_KIND_COMMANDS = {
    "vmalloc": ("leaktrace kernel --kind vmalloc", "vmalloc areas are growing"),
    "percpu": ("leaktrace kernel --kind percpu", "percpu allocations are growing"),
    "unaccounted": (
        "leaktrace kernel --kind page",
        "pages are allocated that no slab, vmalloc or LRU counter explains",
    ),
    "shmem": (
        "df -h -t tmpfs; ipcs -m",
        "shmem is tmpfs files or shared memory segments: look for growing files, not allocations",
    ),
}


def next_step(verdict: "Verdict", growers: tuple, slabs_known: bool) -> NextStep:
    """The one command to run next for a growing category."""
    category = verdict.category
    top = growers[0] if growers else None
    if category == "user_anon":
        if top is None:
            return NextStep(category, "leaktrace triage --window 5m",
                            "anonymous memory grew but no single process did: short-lived processes?")
        where = f" in container {top.container}" if top.container else ""
        return NextStep(category, f"leaktrace attach -p {top.pid}",
                        f"{top.name} (pid {top.pid}){where} grows fastest")
    if category.startswith("slab_"):
        if top is None:
            command = "sudo leaktrace triage" if not slabs_known else "leaktrace kernel --kind cache"
            return NextStep(category, command, "slab grew but no single cache is known to have grown")
        reason = f"cache {top.name} grows fastest"
        if verdict.verdict == "cache":
            reason += "; reclaimable, so the kernel frees it under pressure (drop_caches confirms)"
        return NextStep(category, f"leaktrace kernel --cache {top.name}", reason)
    command, reason = _KIND_COMMANDS[category]
    if top is not None:
        reason += f"; top caller {top.name}"
    return NextStep(category, command, reason)


