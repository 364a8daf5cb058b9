"""The user program's counters (bpf/common.h) and what each loss means for the figures."""
from __future__ import annotations

from typing import Dict, Tuple

from ..base.config import ProbeConfig

# Order of `enum counter` in bpf/common.h.
COUNTERS = (
    "allocs", "frees", "unknown_frees", "failed_allocs", "alloc_map_full",
    "stack_failed", "bucket_map_full", "pending_map_full", "sampled_out",
    "nested_mmaps", "replaced", "nested_calls", "missed_returns", "bucket_inserts",
    "forks_lost",
)
# Counters that mean a figure undercounts. unknown_frees is not one: a free of a
# block never seen allocated changes no total (see loss_notes).
INTERNAL = ("bucket_inserts",)  # bookkeeping, not an event a report shows
LOSSES = ("alloc_map_full", "stack_failed", "bucket_map_full", "pending_map_full", "missed_returns",
          "forks_lost")


def loss_notes(losses: Dict[str, int], config: ProbeConfig) -> Tuple[str, ...]:
    """What each non-zero loss means for the figures, and which option helps."""
    notes = []
    if losses.get("alloc_map_full"):
        notes.append(f"{losses['alloc_map_full']} allocations were not tracked: the allocation map is "
                     f"full (--max-allocs {config.max_allocs}); totals are lower bounds; raise "
                     "--max-allocs or use --sample-rate")
    if losses.get("stack_failed"):
        notes.append(f"{losses['stack_failed']} allocations have no stack (stack map full at "
                     f"--max-stacks {config.max_stacks}, or the walk failed); they are grouped as [unknown]")
    if losses.get("bucket_map_full"):
        notes.append(f"{losses['bucket_map_full']} updates of the per-stack totals were lost: the "
                     f"totals map is full (--max-buckets {config.max_buckets}): too many distinct "
                     "stacks and ages; totals are lower bounds; raise --max-buckets")
    if losses.get("unknown_frees") and config.sample_rate <= 1:
        notes.append(f"{losses['unknown_frees']} frees of blocks never seen allocated, which change no "
                     "figure: blocks allocated before leaktrace attached; glibc emptying an exiting "
                     "thread's cache (tcache) with free(), i.e. blocks the program had freed already and "
                     "the cache itself, allocated inside malloc; and munmaps of what a partial munmap "
                     "already counted as freed (glibc trims each new arena's mapping so)"
                     + ("; with --follow-forks, children freeing their copies of blocks their parent "
                        "allocated before the fork (those stay the parent's)" if config.follow_forks else ""))
    if losses.get("pending_map_full"):
        notes.append(f"{losses['pending_map_full']} calls were lost between entry and return "
                     "(too many threads inside the allocator at once)")
    if losses.get("forks_lost"):
        notes.append(f"{losses['forks_lost']} processes forked by traced ones were not followed: "
                     "the traced set is full")
    if losses.get("missed_returns"):
        notes.append(f"{losses['missed_returns']} allocator calls were seen entering but not "
                     "returning (running while the probes were attached, or left by longjmp): "
                     "what they allocated is not counted")
    return tuple(notes)
