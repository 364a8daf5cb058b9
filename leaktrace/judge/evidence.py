"""Pure: kernel mode's evidence from the outstanding objects themselves.

A generic allocation stack (kmalloc from a helper many paths share) does not
say who owns the memory; the objects often do: an ops table, a callback, a
type's methods stored in them. For each of the first MAX_SITES shown sites
(`--top 0` shows them all), choose() picks up to SAMPLE_BLOCKS of its
outstanding slab objects (the oldest first); the probe
reads their first bytes; row_contents() gives the row a few samples, how
alike the heads are (reach.content.similarity, word by word) and
each aligned word that is the address of a kernel symbol, with how many of
the sampled objects hold it at that offset. Kernels built without
CONFIG_KALLSYMS_ALL list no data symbols, so a pointer to an ops table
names only its section (`__start_rodata+0x4b7e0`): with_tables() adds the
functions the table holds (`anon_pipe_buf_release, ...`), which say whose it is.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..base.model import Allocation, ContentSample, KernelPointer, RowContents, Site, Snapshot
from .reach import content

READABLE_KINDS = ("kmalloc", "cache")  # slab objects: pages, percpu and vmalloc areas are not read
WORD = 8
KERNEL_HALF = 0xFFFF800000000000  # x86-64 and arm64: kernel addresses start here
MAX_POINTERS = 8  # per row, most objects first
MAX_SITES = 50  # the heaviest: reading every site of thousands would hold up the final report

# address -> "symbol" or "symbol+0xoff" (None: not a kernel symbol)
SymbolLookup = Callable[[int], Optional[str]]
# addresses -> the first bytes of each that could be read
Reader = Callable[[Iterable[int]], Mapping[int, bytes]]


def belongs(allocation: Allocation, site: Site) -> bool:
    """Whether the allocation is one of the site's, whatever the grouping."""
    return (allocation.stack in site.stacks
            and (site.kind == "mixed" or allocation.kind == site.kind)
            and (not site.pid or allocation.pid == site.pid)
            and (not site.cache or allocation.cache == site.cache))


def choose(sites: Sequence[Site], allocations: Iterable[Allocation],
           per_site: int = content.SAMPLE_BLOCKS) -> Dict[Tuple, List[Allocation]]:
    """Per site key, its oldest readable allocations, at most per_site."""
    by_stack: Dict[object, List[Allocation]] = {}
    for allocation in allocations:
        if allocation.kind in READABLE_KINDS:
            by_stack.setdefault(allocation.stack, []).append(allocation)
    chosen = {}
    for site in sites[:MAX_SITES]:
        mine = [a for stack in site.stacks for a in by_stack.get(stack, ()) if belongs(a, site)]
        mine.sort(key=lambda a: (a.timestamp_ns, a.address))
        if mine:
            chosen[site.key] = mine[:per_site]
    return chosen


def words(head: bytes) -> Iterable[Tuple[int, int]]:
    """(offset, value) of each aligned little-endian word."""
    for offset in range(0, len(head) - WORD + 1, WORD):
        yield offset, int.from_bytes(head[offset:offset + WORD], "little")


def pointers(heads: Sequence[bytes], lookup: SymbolLookup) -> Tuple[KernelPointer, ...]:
    """Words that name a kernel symbol, by (offset, value), most objects first."""
    found: Counter = Counter()
    names: Dict[int, str] = {}
    for head in heads:
        for offset, value in set(words(head)):
            if value >= KERNEL_HALF and value not in names:
                names[value] = lookup(value)
            if value >= KERNEL_HALF and names[value]:
                found[(offset, value)] += 1
    ranked = sorted(found.items(), key=lambda item: (-item[1], item[0]))
    return tuple(KernelPointer(offset=offset, address=value, symbol=names[value], objects=n)
                 for (offset, value), n in ranked[:MAX_POINTERS])


def tables_to_read(contents: Iterable[RowContents], is_function: Callable[[int], bool]) -> List[int]:
    """Addresses the rows' pointers name that are not functions: tables, maybe."""
    return sorted({p.address for c in contents for p in c.pointers if not is_function(p.address)})


def with_tables(contents: RowContents, tables: Mapping[int, bytes],
                function_at: SymbolLookup) -> RowContents:
    """Each pointer to a table given the functions the table starts with
    (words that are exactly a function's address)."""
    def holds(address: int) -> Tuple[str, ...]:
        found = (function_at(value) for _, value in words(tables.get(address, b"")))
        return tuple(dict.fromkeys(name for name in found if name))
    return replace(contents, pointers=tuple(replace(p, holds=holds(p.address)) for p in contents.pointers))


def row_contents(allocations: Sequence[Allocation], heads: Mapping[int, bytes],
                 lookup: SymbolLookup) -> Optional[RowContents]:
    """What the row's sampled objects hold; None when none could be read."""
    read = [(a, heads[a.address]) for a in allocations if a.address in heads]
    if not read:
        return None
    samples = tuple(ContentSample(address=a.address, size=a.size, head=head)
                    for a, head in read[:content.SHOWN_SAMPLES])
    found = [head for _, head in read]
    return RowContents(sampled=len(read), samples=samples, similarity=content.similarity(found, WORD),
                       pointers=pointers(found, lookup))


def gather(snapshot: Snapshot, sites: Sequence[Site], read: Reader, read_tables: Reader,
           names: SymbolLookup, functions) -> Dict[Tuple, RowContents]:
    """Per site key, what a sample of its outstanding objects holds. read: the
    first bytes of slab objects, read_tables: of kernel data (the probe's
    reader); names: any kernel symbol; functions: the text symbols
    (symbols.kallsyms.KernelSymbols: lookup, function_at)."""
    chosen = choose(sites, snapshot.allocations)
    heads = read(a.address for sampled in chosen.values() for a in sampled)
    found = {key: row_contents(sampled, heads, names) for key, sampled in chosen.items()}
    rows = {key: value for key, value in found.items() if value is not None}
    tables = read_tables(tables_to_read(rows.values(), lambda a: functions.lookup(a) is not None))
    return {key: with_tables(value, tables, functions.function_at) for key, value in rows.items()}
