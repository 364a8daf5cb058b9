"""How kernel mode learns the slab cache of each kmem_cache_alloc, per kernel.

- 6.2+: the event has a `name` field (CACHE_NAME, tracepoints.FIELD_DEFINES).
- 6.1: no `name`, but the raw arguments are (call_site, ptr, struct
  kmem_cache *s, gfp_flags, node) - the format shows a `node` field - so a
  raw tracepoint reads s->name and s->size (CACHE_NAME_FROM_STRUCT).
- before 6.1 (5.10): the event carries no cache at all, so the object's slab
  page names it (CACHE_NAME_FROM_PAGE): on x86-64 the page is
  vmemmap_base + ((ptr - page_offset_base) >> PAGE_SHIFT) * sizeof(struct
  page), a tail page points to its head (compound_head | 1), and the head's
  slab_cache is the kmem_cache.
Offsets come from the running kernel's BTF and addresses from kallsyms, never
from headers of another version; when they cannot be had, caches are shown by
object size and the report says why. plan() is pure: formats and a
RunningKernel (layouts and symbols) in, defines and words out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Protocol, Sequence

FROM_STRUCT = ("slab cache names read from kmem:kmem_cache_alloc's kmem_cache argument (its format "
               "has no name field on this kernel)")
FROM_PAGE = ("slab cache names read from each object's slab page (kmem:kmem_cache_alloc has no name "
             "field or cache argument on this kernel)")
BY_SIZE = "kmem:kmem_cache_alloc has no `name` field on this kernel: slab caches are shown by object size"
NEEDS = "; naming them needs the kernel's BTF (/sys/kernel/btf/vmlinux)"
NEEDS_PAGE = "; naming them needs x86-64, the kernel's BTF and kallsyms addresses (root)"


class RunningKernel(Protocol):
    def layout(self, struct_name: str, members: Sequence[str]) -> Optional[Mapping[str, int]]:
        """Byte offsets of members (and "sizeof") of a struct of this kernel, or None."""

    def symbol(self, name: str) -> Optional[int]:
        """Address of a kernel variable, or None when unknown or hidden."""

    def machine(self) -> str:
        """platform.machine() of this kernel."""


@dataclass(frozen=True)
class CacheNaming:
    defines: Mapping[str, int] = field(default_factory=dict)
    probe: str = ""  # the report header's line when names are recovered
    note: str = ""  # the report's warning when they are not


OFF = {"CACHE_NAME_FROM_STRUCT": 0, "CACHE_NAME_FROM_PAGE": 0}


class UnknownKernel:
    """Knows nothing: caches go by size (tests, and callers without a kernel)."""

    def layout(self, struct_name: str, members: Sequence[str]) -> Optional[Mapping[str, int]]:
        return None

    def symbol(self, name: str) -> Optional[int]:
        return None

    def machine(self) -> str:
        return ""


def plan(formats: Mapping, kernel: RunningKernel) -> CacheNaming:
    """Naming for kernels whose kmem_cache_alloc has no `name` field."""
    event = formats.get(("kmem", "kmem_cache_alloc"))
    if event is not None and event.has("node"):
        cache = kernel.layout("kmem_cache", ("name", "size"))
        if not cache:
            return CacheNaming(OFF, note=BY_SIZE + NEEDS)
        return CacheNaming(dict(OFF, HAVE_CACHE_ALLOC=0, CACHE_NAME_FROM_STRUCT=1,
                                KMEM_CACHE_NAME_OFFSET=cache["name"], KMEM_CACHE_SIZE_OFFSET=cache["size"]),
                           probe=FROM_STRUCT)
    page_defines = _page_walk(kernel)
    if page_defines is None:
        return CacheNaming(OFF, note=BY_SIZE + NEEDS_PAGE)
    return CacheNaming(dict(OFF, CACHE_NAME_FROM_PAGE=1, **page_defines), probe=FROM_PAGE)


def _page_walk(kernel: RunningKernel) -> Optional[Dict[str, int]]:
    if kernel.machine() != "x86_64":
        return None
    page = kernel.layout("page", ("compound_head", "slab_cache"))
    cache = kernel.layout("kmem_cache", ("name",))
    base, vmemmap = kernel.symbol("page_offset_base"), kernel.symbol("vmemmap_base")
    if not (page and cache and base and vmemmap):
        return None
    return {"PAGE_OFFSET_BASE_ADDR": base, "VMEMMAP_BASE_ADDR": vmemmap, "STRUCT_PAGE_SIZE": page["sizeof"],
            "PAGE_COMPOUND_HEAD_OFFSET": page["compound_head"], "PAGE_SLAB_CACHE_OFFSET": page["slab_cache"],
            "KMEM_CACHE_NAME_OFFSET": cache["name"]}
