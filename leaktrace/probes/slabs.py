"""Slab cache names: the caches this kernel has, and kmalloc's naming rules.

A kmalloc tracepoint carries no cache name, only bytes_alloc and gfp flags;
the kernel picks the cache from those (mm/slab_common.c), so the name is
derived the same way: kmalloc-64, kmalloc-cg-1k, kmalloc-rcl-192,
dma-kmalloc-8k, and kmalloc-large above the biggest kmalloc cache (those
come straight from the page allocator).

SLUB merges caches of the same size and flags: the merged cache keeps the
name of the first one created, and that is the name /proc/slabinfo and the
tracepoints show. /sys/kernel/slab lists every name, the merged ones as
symlinks to one shared directory; merged_into() maps them to the real name.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Optional, Set, Tuple

# Same order as enum kmalloc_type in bpf/kernel_common.h.
KMALLOC_TYPES = ("", "rcl-", "cg-", "dma-")
KMALLOC_MAX_CACHE = 8192  # 2 * PAGE_SIZE with SLUB
KMALLOC_LARGE = "kmalloc-large"
TYPE_SHIFT = 28  # wanted_kmalloc map key: bytes_alloc | type << TYPE_SHIFT
_KMALLOC_NAME = re.compile(r"^(dma-)?kmalloc-(rcl-|cg-)?(\d+)(k?)$")


def _size_text(size: int) -> str:
    return f"{size // 1024}k" if size >= 1024 and size % 1024 == 0 else str(size)


def kmalloc_cache_name(bytes_alloc: int, kmalloc_type: int) -> str:
    if bytes_alloc > KMALLOC_MAX_CACHE:
        return KMALLOC_LARGE
    kind = KMALLOC_TYPES[kmalloc_type] if 0 <= kmalloc_type < len(KMALLOC_TYPES) else ""
    if kind == "dma-":
        return f"dma-kmalloc-{_size_text(bytes_alloc)}"
    return f"kmalloc-{kind}{_size_text(bytes_alloc)}"


def kmalloc_class(name: str) -> Optional[Tuple[int, int]]:
    """(bytes_alloc, type) of a kmalloc cache name, or None for other caches."""
    match = _KMALLOC_NAME.match(name)
    if not match:
        return None
    size = int(match[3]) * (1024 if match[4] else 1)
    if match[1]:
        return size, KMALLOC_TYPES.index("dma-")
    return size, KMALLOC_TYPES.index(match[2] or "")


def parse_slabinfo(text: str) -> Set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith(("slabinfo -", "#")) or not line.strip():
            continue
        names.add(line.split()[0])
    return names


def read_slabinfo(path: str = "/proc/slabinfo") -> Set[str]:
    try:
        with open(path) as handle:
            return parse_slabinfo(handle.read())
    except OSError:
        return set()


def slab_caches(slabinfo: str = "/proc/slabinfo", sysfs: str = "/sys/kernel/slab") -> Set[str]:
    """Every slab cache name this kernel knows (merged aliases included)."""
    names = read_slabinfo(slabinfo)
    try:
        names |= {n for n in os.listdir(sysfs) if not n.startswith(":")}
    except OSError:
        pass
    return names


def merged_into(slabinfo_names: Set[str], sysfs: str = "/sys/kernel/slab") -> Dict[str, str]:
    """{alias: the cache it is merged into} for caches that are not their own."""
    try:
        entries = os.listdir(sysfs)
    except OSError:
        return {}
    by_target: Dict[str, list] = {}
    for name in entries:
        path = os.path.join(sysfs, name)
        if not name.startswith(":") and os.path.islink(path):
            by_target.setdefault(os.readlink(path), []).append(name)
    aliases = {}
    for names in by_target.values():
        real = [n for n in names if n in slabinfo_names]
        if len(real) == 1:
            aliases.update({n: real[0] for n in names if n != real[0]})
    return aliases
