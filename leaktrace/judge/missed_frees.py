"""Pure: which figures the losses could explain, so they are not called leaks.

A kernel report counts an object as held until its free is seen. Frees the
kernel skipped (missed_frees: another BPF program was running on that CPU)
and frees that fire no tracepoint (kfree_rcu batches, bulk frees) leave
objects counted that are gone. Two checks, per snapshot:

  - a slab cache cannot hold more objects than its slabs have room for
    (/proc/slabinfo num_objs, Snapshot.slab_slots): what is counted beyond
    that are frees that were missed, and every row of that cache is an upper
    bound;
  - a row that holds no more allocations than frees were missed may be made
    of missed frees alone;
  - a row some of whose records were retired because their address was
    allocated again (Site.silent_frees) is made where objects are freed
    without a tracepoint: any of its outstanding objects may be gone.

Per row, uncertain_bytes() says how much of it these losses could explain:
all of it when its objects go silently or its cache is over-counted, else
as many objects as frees were missed (at the row's mean size).

Either way the row's growth is no evidence of a leak: GrowthTracker calls
it `unknown` and says why (Doubts.reason), and the report says which caches
hold less than counted (Doubts.notes). User-mode losses only ever lower the
figures, so a user-mode snapshot has no doubts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Tuple

from leaktrace.base.model import Site, Snapshot


@dataclass(frozen=True)
class Doubts:
    counted: Mapping[str, Tuple[int, int]] = field(default_factory=dict)  # cache -> (counted, slots)
    missed_frees: int = 0

    def uncertain_bytes(self, site: Site) -> int:
        """Of the site's bytes, those that frees this trace could not see may explain."""
        if site.silent_frees or site.cache in self.counted:
            return site.bytes
        if site.count <= 0:
            return 0
        return site.bytes * min(site.count, self.missed_frees) // site.count

    def reason(self, site: Site) -> str:
        """Why this site's figures may not be real; "" when nothing says so."""
        if site.cache in self.counted:
            counted, slots = self.counted[site.cache]
            return (f"{counted:,} objects are counted in {site.cache}, which has room for "
                    f"{slots:,} (/proc/slabinfo): at least {counted - slots:,} frees were missed")
        if site.silent_frees:
            return (f"{site.silent_frees:,} of this row's objects were freed where no tracepoint fires "
                    f"(kfree_rcu batches, bulk frees) and seen only when their address was allocated "
                    f"again: any of its outstanding objects may be free already")
        if self.missed_frees and self.missed_frees >= site.count:
            return (f"{self.missed_frees:,} frees were missed while tracing, as many as this "
                    f"row's {site.count:,} allocations")
        return ""

    def notes(self) -> Tuple[str, ...]:
        return tuple(
            f"{cache}: {counted:,} objects counted, more than the {slots:,} its slabs have room "
            f"for (/proc/slabinfo): frees were missed (see missed_frees, replaced); its rows are "
            f"upper bounds and are not called leaks"
            for cache, (counted, slots) in sorted(self.counted.items()))


def doubts(snapshot: Snapshot) -> Doubts:
    """The doubts a snapshot's own losses and slab sizes raise."""
    counted: Dict[str, int] = {}
    for bucket in snapshot.buckets:
        if bucket.count > 0 and bucket.cache in snapshot.slab_slots:
            counted[bucket.cache] = counted.get(bucket.cache, 0) + bucket.count
    over = {cache: (n, snapshot.slab_slots[cache]) for cache, n in counted.items()
            if n > snapshot.slab_slots[cache]}
    return Doubts(over, snapshot.losses.get("missed_frees", 0) if snapshot.mode == "kernel" else 0)
