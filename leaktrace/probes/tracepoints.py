"""Which kernel allocation tracepoints exist here, and which fields they carry.

parse_format() reads one tracefs `events/<group>/<event>/format` file;
plan_tracing() is pure: from the formats found (None = event missing) and the
kinds asked for, it decides what kernel_alloc.c compiles (one -D flag per
handler and per optional field) and says, in plain words, what is traced and
what this kernel cannot give. detect() is the only part that reads tracefs.
Kernels differ: before 6.1 kmalloc_node and kmem_cache_alloc_node are
separate events, the cache `name` field arrived in 6.2 (cache_names.py
recovers names on older kernels), percpu's bytes_alloc in 6.0, the vmalloc
events in 6.2.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

from ..base.model import KERNEL_KINDS
from . import cache_names

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d);"
)


@dataclass(frozen=True)
class Field:
    name: str
    decl: str  # the C declaration, e.g. "const void * ptr", "__data_loc char[] name"
    offset: int
    size: int
    signed: bool


@dataclass(frozen=True)
class EventFormat:
    name: str
    id: int
    fields: Mapping[str, Field]

    def has(self, *names: str) -> bool:
        return all(n in self.fields for n in names)


def parse_format(text: str) -> EventFormat:
    """Parse a tracefs format file; raises ValueError when it is not one."""
    name, event_id, fields = "", -1, {}
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            event_id = int(line.split(":", 1)[1])
        match = _FIELD.match(line)
        if match:
            decl = match["decl"].strip()
            field_name = re.sub(r"\[.*\]$", "", decl.split()[-1])
            fields[field_name] = Field(field_name, decl, int(match["offset"]),
                                       int(match["size"]), match["signed"] == "1")
    if not name or event_id < 0 or not fields:
        raise ValueError("not a tracepoint format file")
    return EventFormat(name, event_id, fields)


@dataclass(frozen=True)
class KindEvents:
    """The events one kind needs: allocation events (any one will do, all
    present are attached) plus the free event, and the fields each must carry."""

    allocs: Tuple[Tuple[str, str], ...]  # (group, event)
    free: Tuple[str, str]
    alloc_fields: Tuple[str, ...]
    free_field: str


KIND_EVENTS: Dict[str, KindEvents] = {
    "kmalloc": KindEvents((("kmem", "kmalloc"), ("kmem", "kmalloc_node")), ("kmem", "kfree"),
                          ("ptr", "bytes_alloc"), "ptr"),
    "cache": KindEvents((("kmem", "kmem_cache_alloc"), ("kmem", "kmem_cache_alloc_node")),
                        ("kmem", "kmem_cache_free"), ("ptr", "bytes_alloc"), "ptr"),
    "page": KindEvents((("kmem", "mm_page_alloc"),), ("kmem", "mm_page_free"), ("pfn", "order"), "pfn"),
    "percpu": KindEvents((("percpu", "percpu_alloc_percpu"),), ("percpu", "percpu_free_percpu"),
                         ("ptr", "size"), "ptr"),
    "vmalloc": KindEvents((("vmalloc", "alloc_vmap_area"),), ("vmalloc", "free_vmap_area_noflush"),
                          ("addr", "size"), "va_start"),
}

# (group, event) -> the define that compiles its handler.
HANDLER_DEFINES = {
    ("kmem", "kmalloc"): "HAVE_KMALLOC", ("kmem", "kmalloc_node"): "HAVE_KMALLOC_NODE",
    ("kmem", "kfree"): "HAVE_KFREE",
    ("kmem", "kmem_cache_alloc"): "HAVE_CACHE_ALLOC", ("kmem", "kmem_cache_alloc_node"): "HAVE_CACHE_ALLOC_NODE",
    ("kmem", "kmem_cache_free"): "HAVE_CACHE_FREE",
    ("kmem", "mm_page_alloc"): "HAVE_PAGE_ALLOC", ("kmem", "mm_page_free"): "HAVE_PAGE_FREE",
    ("percpu", "percpu_alloc_percpu"): "HAVE_PERCPU_ALLOC", ("percpu", "percpu_free_percpu"): "HAVE_PERCPU_FREE",
    ("vmalloc", "alloc_vmap_area"): "HAVE_VMAP_ALLOC", ("vmalloc", "free_vmap_area_noflush"): "HAVE_VMAP_FREE",
}

# Optional fields: (group, event, field) -> define set when present.
FIELD_DEFINES = {
    ("kmem", "kmalloc", "gfp_flags"): "KMALLOC_GFP",
    ("kmem", "kmem_cache_alloc", "name"): "CACHE_NAME",
    ("kmem", "kmem_cache_alloc_node", "name"): "CACHE_NODE_NAME",
    ("percpu", "percpu_alloc_percpu", "bytes_alloc"): "PERCPU_BYTES_ALLOC",
    ("vmalloc", "alloc_vmap_area", "failed"): "VMAP_FAILED",
}

Formats = Mapping[Tuple[str, str], Optional[EventFormat]]


@dataclass(frozen=True)
class TracingPlan:
    kinds: Tuple[str, ...]  # kinds that will be traced
    events: Tuple[Tuple[str, str], ...]  # tracepoints to attach
    defines: Mapping[str, int]
    notes: Tuple[str, ...] = ()  # what is not available, in words
    missing: Tuple[str, ...] = field(default_factory=tuple)  # kinds asked for but untraceable
    probes: Tuple[str, ...] = ()  # choices made for this kernel, for the report header


def _kind_events(kind: str, formats: Formats) -> Tuple[list, Optional[str]]:
    """(events to attach, reason the kind cannot be traced or None)."""
    spec = KIND_EVENTS[kind]
    allocs = [e for e in spec.allocs if formats.get(e) is not None]
    if not allocs:
        return [], f"{kind}: tracepoint {':'.join(spec.allocs[0])} does not exist on this kernel"
    for event in allocs:
        if not formats[event].has(*spec.alloc_fields):
            wanted = ", ".join(spec.alloc_fields)
            return [], f"{kind}: tracepoint {':'.join(event)} lacks the fields {wanted}"
    free = formats.get(spec.free)
    if free is None or not free.has(spec.free_field):
        return [], (f"{kind}: tracepoint {':'.join(spec.free)} is missing, so frees could "
                    "not be matched")
    return allocs + [spec.free], None


def plan_tracing(kinds: Sequence[str], formats: Formats,
                 kernel: cache_names.RunningKernel = cache_names.UnknownKernel()) -> TracingPlan:
    """Decide what to compile and attach for `kinds` given the formats found;
    kernel (layouts, symbols) is asked only when caches need naming another way."""
    traced, events, notes, missing = [], [], [], []
    defines: Dict[str, int] = {define: 0 for define in HANDLER_DEFINES.values()}
    defines.update({define: 0 for define in FIELD_DEFINES.values()}, **cache_names.OFF)
    for kind in kinds:
        kind_events, problem = _kind_events(kind, formats)
        if problem:
            notes.append(f"not traced: {problem}")
            missing.append(kind)
            continue
        traced.append(kind)
        events.extend(kind_events)
        for event in kind_events:
            defines[HANDLER_DEFINES[event]] = 1
    for (group, event, field_name), define in FIELD_DEFINES.items():
        found = formats.get((group, event))
        defines[define] = int(found is not None and field_name in found.fields)
    probes = []
    if "cache" in traced and not defines["CACHE_NAME"]:
        naming = cache_names.plan(formats, kernel)
        defines.update(naming.defines)
        notes += [naming.note] if naming.note else []
        probes += [naming.probe] if naming.probe else []
    return TracingPlan(tuple(traced), tuple(events), defines, tuple(notes), tuple(missing), tuple(probes))


def read_formats(tracefs: str, kinds: Sequence[str] = KERNEL_KINDS) -> Dict[Tuple[str, str], Optional[EventFormat]]:
    """The format of every event the kinds may use; None where it is missing or unreadable."""
    formats: Dict[Tuple[str, str], Optional[EventFormat]] = {}
    for kind in kinds:
        spec = KIND_EVENTS[kind]
        for group, event in spec.allocs + (spec.free,):
            path = os.path.join(tracefs, "events", group, event, "format")
            try:
                with open(path) as handle:
                    formats[(group, event)] = parse_format(handle.read())
            except (OSError, ValueError):
                formats[(group, event)] = None
    return formats


def detect(kinds: Sequence[str], tracefs: str,
           kernel: cache_names.RunningKernel = cache_names.UnknownKernel()) -> TracingPlan:
    return plan_tracing(kinds, read_formats(tracefs, kinds), kernel)
