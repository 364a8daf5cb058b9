"""Tracepoint feature detection over captured format files: this kernel's
(6.18), Debian 12's (6.1: no cache names, but the kmem_cache in the raw
arguments) and an older layout (5.10: *_node events, no cache names, no vmalloc)."""
from __future__ import annotations

from pathlib import Path

import pytest

from leaktrace.model import KERNEL_KINDS
from leaktrace.probes import tracepoints

DATA = Path(__file__).resolve().parent.parent / "data" / "tracepoints"
NEW = str(DATA / "linux-6.18")
OLD = str(DATA / "linux-5.10")
DEBIAN_12 = str(DATA / "linux-6.1")
LAYOUT = {"name": 96, "size": 24}  # struct kmem_cache, as a kernel's BTF would give it


def read(tree: str, group: str, event: str) -> tracepoints.EventFormat:
    return tracepoints.parse_format(Path(tree, group, event, "format").read_text())


def test_fields_of_kmem_cache_alloc():
    fmt = read(NEW, "kmem", "kmem_cache_alloc")
    assert fmt.name == "kmem_cache_alloc" and fmt.id == 659
    assert fmt.fields["name"].decl == "__data_loc char[] name"
    assert (fmt.fields["ptr"].offset, fmt.fields["ptr"].size) == (16, 8)
    assert fmt.fields["bytes_alloc"].offset == 40
    assert fmt.has("ptr", "bytes_alloc", "name") and not fmt.has("pfn")


def test_percpu_pointer_with_address_space_qualifier():
    fmt = read(NEW, "percpu", "percpu_alloc_percpu")
    assert fmt.fields["ptr"].decl == "void __seg_gs * ptr"
    assert fmt.fields["bytes_alloc"].offset == 64


def test_not_a_format_file():
    with pytest.raises(ValueError):
        tracepoints.parse_format("hello\nworld\n")


def formats_of(tree: str):
    # read_formats expects <tracefs>/events/<group>/<event>/format
    return {key: (read(tree, *key) if Path(tree, *key, "format").exists() else None)
            for spec in tracepoints.KIND_EVENTS.values() for key in spec.allocs + (spec.free,)}


def test_everything_traced_on_this_kernels_layout():
    plan = tracepoints.plan_tracing(KERNEL_KINDS, formats_of(NEW))
    assert plan.kinds == KERNEL_KINDS and plan.missing == () and plan.notes == ()
    assert plan.defines["HAVE_KMALLOC"] == 1 and plan.defines["HAVE_KMALLOC_NODE"] == 0
    assert plan.defines["CACHE_NAME"] == 1 and plan.defines["PERCPU_BYTES_ALLOC"] == 1
    assert ("vmalloc", "free_vmap_area_noflush") in plan.events


def test_older_kernel_layout_adapts_and_says_what_is_missing():
    plan = tracepoints.plan_tracing(KERNEL_KINDS, formats_of(OLD))
    assert plan.kinds == ("kmalloc", "cache", "page", "percpu")
    assert plan.missing == ("vmalloc",)
    assert plan.defines["HAVE_KMALLOC_NODE"] == 1 and plan.defines["HAVE_CACHE_ALLOC_NODE"] == 1
    assert plan.defines["CACHE_NAME"] == 0 and plan.defines["PERCPU_BYTES_ALLOC"] == 0
    assert plan.defines["HAVE_VMAP_ALLOC"] == 0
    assert any("vmalloc:alloc_vmap_area does not exist" in n for n in plan.notes)
    assert any("no `name` field" in n for n in plan.notes)


def test_debian_12_names_caches_from_the_raw_kmem_cache_argument():
    plan = tracepoints.plan_tracing(KERNEL_KINDS, formats_of(DEBIAN_12), lambda: LAYOUT)
    assert plan.kinds == ("kmalloc", "cache", "page", "percpu") and plan.missing == ("vmalloc",)
    assert plan.defines["CACHE_NAME"] == 0 and plan.defines["HAVE_CACHE_ALLOC"] == 0
    assert plan.defines["CACHE_NAME_FROM_STRUCT"] == 1
    assert (plan.defines["KMEM_CACHE_NAME_OFFSET"], plan.defines["KMEM_CACHE_SIZE_OFFSET"]) == (96, 24)
    assert plan.probes == (tracepoints.CACHE_NAMES_FROM_STRUCT,)
    assert not any("name" in n for n in plan.notes)
    assert ("kmem", "kmem_cache_alloc") in plan.events


def test_without_btf_caches_go_by_size_and_the_note_says_why():
    plan = tracepoints.plan_tracing(("cache",), formats_of(DEBIAN_12), lambda: None)
    assert plan.defines["HAVE_CACHE_ALLOC"] == 1 and plan.defines["CACHE_NAME_FROM_STRUCT"] == 0
    assert plan.notes == ("kmem:kmem_cache_alloc has no `name` field on this kernel: slab caches are "
                          "shown by object size; naming them needs the kernel's BTF "
                          "(/sys/kernel/btf/vmlinux)",) and plan.probes == ()


def test_events_without_the_kmem_cache_never_ask_for_its_layout():
    def layout():
        raise AssertionError("5.10's event carries no kmem_cache: its layout is of no use")
    plan = tracepoints.plan_tracing(("cache",), formats_of(OLD), layout)
    assert plan.defines["CACHE_NAME_FROM_STRUCT"] == 0 and plan.defines["HAVE_CACHE_ALLOC"] == 1
    assert plan.notes[0].endswith("shown by object size")


def test_missing_free_event_disables_only_that_kind():
    formats = formats_of(NEW)
    formats[("percpu", "percpu_free_percpu")] = None
    plan = tracepoints.plan_tracing(("kmalloc", "percpu"), formats)
    assert plan.kinds == ("kmalloc",) and plan.missing == ("percpu",)
    assert plan.defines["HAVE_PERCPU_ALLOC"] == 0 and plan.defines["HAVE_KMALLOC"] == 1
    assert "frees could not be matched" in plan.notes[0]


def test_only_asked_kinds_are_compiled():
    plan = tracepoints.plan_tracing(("page",), formats_of(NEW))
    assert plan.events == (("kmem", "mm_page_alloc"), ("kmem", "mm_page_free"))
    assert plan.defines["HAVE_KMALLOC"] == 0 and plan.defines["HAVE_PAGE_FREE"] == 1


def test_read_formats_from_a_tracefs_tree(tmp_path):
    events = tmp_path / "events"
    events.mkdir()
    (events / "kmem").symlink_to(Path(OLD, "kmem"))
    plan = tracepoints.detect(("kmalloc", "vmalloc"), str(tmp_path))
    assert plan.kinds == ("kmalloc",) and plan.missing == ("vmalloc",)


def test_live_tracefs_matches_capture():
    live = Path("/sys/kernel/tracing/events/kmem/kmalloc/format")
    if not live.exists() or not live.stat().st_mode & 0o444:
        pytest.skip("tracefs not mounted here")
    try:
        text = live.read_text()
    except PermissionError:
        pytest.skip("tracefs not readable without root")
    assert tracepoints.parse_format(text).has("ptr", "bytes_alloc")
