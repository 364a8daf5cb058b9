"""Pure: which outstanding blocks are still referenced, from words of memory.

classify(blocks, segments) gives one class per block:
  reachable     a root word points into it, or a reachable block does
  unreferenced  not reachable, and no other unreachable block points into it:
                definitely lost (valgrind's "definitely lost", LSan's "direct")
  indirectly    not reachable, but pointed into by an unreachable block:
  lost          lost with the block that holds the pointer
A group of unreachable blocks pointing at each other in a cycle, with nothing
else pointing in, counts its lowest-addressed block as unreferenced and the
rest as indirect, so every lost structure has one "head". A block's pointers
to itself never count.

References are conservative, as in LeakSanitizer: every 8-byte-aligned word
whose value falls anywhere inside a block ([address, address + size)) refers
to it, so interior pointers (a member, a base-class subobject, a pointer with
tag bits in its low bits) count. Top-byte tags are not stripped. A word that
only happens to look like a pointer keeps a block alive (never the reverse).

Words of heap segments count through the block they lie in (Block.content):
  scan  the block's words are its references
  root  its words are roots (a block whose fate at the freeze is unknown)
  skip  its words are ignored (a thread stack: its live part is a root segment)
Heap words in no block (allocator free space and bookkeeping) are ignored,
or are roots with untracked_is_root (blocks allocated before tracing began
live there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from ...base.model import INDIRECTLY_LOST, REACHABLE, UNREFERENCED
from .memory import HEAP, WORD, Segment

SCAN, ROOT_CONTENT, SKIP = "scan", "root", "skip"
CHUNK_WORDS = 1 << 23  # 64 MiB of words at a time bounds the temporaries


@dataclass(frozen=True)
class Block:
    address: int
    size: int
    content: str = SCAN


class BlockIndex:
    """Blocks sorted by address; find() maps many values to blocks at once."""

    def __init__(self, blocks: Sequence[Block]):
        order = sorted(range(len(blocks)), key=lambda i: blocks[i].address)
        self.order = np.array(order, dtype=np.int64)
        self.starts = np.array([blocks[i].address for i in order], dtype=np.uint64)
        self.ends = self.starts + np.array([max(1, blocks[i].size) for i in order], dtype=np.uint64)
        self.low = int(self.starts[0]) if order else 0
        self.high = int(self.ends.max()) if order else 0

    def find(self, values: np.ndarray) -> np.ndarray:
        """Per value, the index (in the caller's order) of the block holding it, or -1."""
        if not len(self.order):
            return np.full(len(values), -1, dtype=np.int64)
        pos = np.searchsorted(self.starts, values, side="right").astype(np.int64) - 1
        inside = pos >= 0
        pos[~inside] = 0
        inside &= values < self.ends[pos]
        return np.where(inside, self.order[pos], -1)

    def holders(self, addresses: np.ndarray) -> np.ndarray:
        """find() for ascending addresses (the words of one copy, in order):
        each block's run of addresses is located once, not each address."""
        out = np.full(len(addresses), -1, dtype=np.int64)
        if len(self.order) and len(addresses):
            lo = np.searchsorted(addresses, self.starts, side="left")
            hi = np.searchsorted(addresses, self.ends, side="left")
            out[_ranges(lo, hi)] = np.repeat(self.order, hi - lo)
        return out


def classify(blocks: Sequence[Block], segments: Iterable[Segment],
             untracked_is_root: bool = False) -> bytes:
    """One class code (UNREFERENCED, INDIRECTLY_LOST, REACHABLE) per block, in order."""
    index = BlockIndex(blocks)
    content = np.array([{SCAN: 0, ROOT_CONTENT: 1, SKIP: 2}[b.content] for b in blocks] or [0],
                       dtype=np.int8)
    seeds: List[np.ndarray] = []
    edges: List[Tuple[np.ndarray, np.ndarray]] = []
    for segment in segments:
        for start, words in _chunks(segment):
            targets, where = _references(index, words)
            if segment.role != HEAP:
                seeds.append(targets)
                continue
            holders = index.holders(np.uint64(start) + where.astype(np.uint64) * np.uint64(WORD))
            kind = np.where(holders >= 0, content[np.maximum(holders, 0)], -1)
            rooted = (kind == 1) | ((kind == -1) & untracked_is_root)
            seeds.append(targets[rooted])
            scanned = (kind == 0) & (holders != targets)
            edges.append((holders[scanned], targets[scanned]))
    return _label(len(blocks), seeds, edges, [b.address for b in blocks])


def _chunks(segment: Segment):
    usable = len(segment.data) - len(segment.data) % WORD
    words = np.frombuffer(segment.data, dtype="<u8", count=usable // WORD)
    for first in range(0, len(words), CHUNK_WORDS):
        yield segment.start + first * WORD, words[first:first + CHUNK_WORDS]


def _references(index: BlockIndex, words: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(block each referring word points into, the word's position), referring words only."""
    where = np.flatnonzero((words >= np.uint64(index.low)) & (words < np.uint64(index.high)))
    targets = index.find(words[where])
    hit = targets >= 0
    return targets[hit], where[hit]


def _label(n: int, seeds: List[np.ndarray], edges, addresses: Sequence[int]) -> bytes:
    graph = _Graph(n, edges)
    reached = bytearray(n)  # 1 once reached from a root or labelled
    graph.reach(np.concatenate(seeds) if seeds else np.zeros(0, np.int64), reached)
    classes = bytearray(REACHABLE if r else UNREFERENCED for r in reached)
    leader = bytearray(n)
    for head in sorted((i for i in range(n) if not reached[i]), key=addresses.__getitem__):
        if reached[head]:
            continue
        reached[head] = leader[head] = 1
        # Everything the new head reaches is indirect, earlier heads included:
        # a head pointed at from outside its own cycle was not a head.
        stack = graph.successors_of(head)
        while stack:
            block = stack.pop()
            if block == head or (reached[block] and not leader[block]):
                continue
            reached[block], leader[block] = 1, 0
            classes[block] = INDIRECTLY_LOST
            stack.extend(graph.successors_of(block))
    return bytes(classes)


class _Graph:
    """Edges holder -> target, deduplicated, as compressed rows: the targets of
    block b are targets[first[b]:first[b + 1]]."""

    WIDE = 256  # a frontier this wide is expanded with numpy, a narrower one in Python

    def __init__(self, n: int, edges):
        width = max(n, 1)
        keys = _distinct(np.concatenate([e[0] * width + e[1] for e in edges]) if edges else np.zeros(0, np.int64))
        self.targets = keys % width
        self.first = np.searchsorted(keys // width, np.arange(n + 1))
        self._targets, self._first = self.targets.tolist(), self.first.tolist()

    def successors_of(self, block: int) -> List[int]:
        return self._targets[self._first[block]:self._first[block + 1]]

    def reach(self, seeds: np.ndarray, reached: bytearray) -> None:
        """Mark everything reachable from seeds. Wide frontiers (a random
        graph) go level by level in numpy; narrow ones (a linked list, one
        node per level) in Python, which has no per-level overhead."""
        mask = np.frombuffer(reached, dtype=np.bool_) if len(reached) else np.zeros(0, np.bool_)
        frontier = _distinct(seeds)
        while len(frontier):
            frontier = frontier[~mask[frontier]]
            if len(frontier) >= self.WIDE:
                mask[frontier] = True
                starts, stops = self.first[frontier], self.first[frontier + 1]
                frontier = _distinct(self.targets[_ranges(starts, stops)])
            else:
                frontier = np.array(self._walk(frontier.tolist(), reached), dtype=np.int64)

    def _walk(self, stack: List[int], reached: bytearray) -> List[int]:
        """Depth first until done, or until the stack grows wide (then numpy takes over)."""
        while stack and len(stack) < 4 * self.WIDE:
            block = stack.pop()
            if reached[block]:
                continue
            reached[block] = 1
            stack.extend(self.successors_of(block))
        return stack


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique's hashing is slower on large integer arrays)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The indexes start..stop-1 of every (start, stop), concatenated."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets
