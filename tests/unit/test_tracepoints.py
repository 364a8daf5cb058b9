"""Tracepoint feature detection over captured format files: this kernel's
(6.18), Debian 12's (6.1: no cache names, but the kmem_cache in the raw
arguments) and an older layout (5.10: *_node events, no cache names, no vmalloc)."""
from __future__ import annotations

from pathlib import Path

import pytest

from leaktrace.base.model import KERNEL_KINDS
from leaktrace.probes import cache_names, tracepoints

DATA = Path(__file__).resolve().parent.parent / "data" / "tracepoints"
NEW = str(DATA / "linux-6.18")
OLD = str(DATA / "linux-5.10")
DEBIAN_12 = str(DATA / "linux-6.1")


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


class FakeKernel:
    """Layouts and symbols as a kernel's BTF and kallsyms would give them."""

    def __init__(self, layouts=None, symbols=None, machine="x86_64"):
        self.layouts, self.symbols, self._machine = layouts or {}, symbols or {}, machine
        self.asked = []

    def layout(self, struct_name, members):
        self.asked.append(struct_name)
        found = self.layouts.get(struct_name)
        return {m: found[m] for m in ("sizeof", *members)} if found else None

    def symbol(self, name):
        return self.symbols.get(name)

    def machine(self):
        return self._machine


KMEM_CACHE = {"sizeof": 8416, "name": 96, "size": 24}
PAGE = {"sizeof": 64, "compound_head": 8, "slab_cache": 24}
X86_VARIABLES = {"page_offset_base": 0xFFFFFFFF82A1C0C8, "vmemmap_base": 0xFFFFFFFF82A1C0B8}


def test_debian_12_names_caches_from_the_raw_kmem_cache_argument():
    plan = tracepoints.plan_tracing(KERNEL_KINDS, formats_of(DEBIAN_12), FakeKernel({"kmem_cache": KMEM_CACHE}))
    assert plan.kinds == ("kmalloc", "cache", "page", "percpu") and plan.missing == ("vmalloc",)
    assert plan.defines["CACHE_NAME"] == 0 and plan.defines["HAVE_CACHE_ALLOC"] == 0
    assert (plan.defines["CACHE_NAME_FROM_STRUCT"], plan.defines["CACHE_NAME_FROM_PAGE"]) == (1, 0)
    assert (plan.defines["KMEM_CACHE_NAME_OFFSET"], plan.defines["KMEM_CACHE_SIZE_OFFSET"]) == (96, 24)
    assert plan.probes == (cache_names.FROM_STRUCT,)
    assert not any("name" in n for n in plan.notes)
    assert ("kmem", "kmem_cache_alloc") in plan.events


def test_without_btf_caches_go_by_size_and_the_note_says_why():
    plan = tracepoints.plan_tracing(("cache",), formats_of(DEBIAN_12), FakeKernel())
    assert plan.defines["HAVE_CACHE_ALLOC"] == 1 and plan.defines["CACHE_NAME_FROM_STRUCT"] == 0
    assert plan.notes == ("kmem:kmem_cache_alloc has no `name` field on this kernel: slab caches are "
                          "shown by object size; naming them needs the kernel's BTF "
                          "(/sys/kernel/btf/vmlinux)",) and plan.probes == ()


def test_before_6_1_the_objects_slab_page_names_the_cache():
    kernel = FakeKernel({"kmem_cache": KMEM_CACHE, "page": PAGE}, X86_VARIABLES)
    plan = tracepoints.plan_tracing(("cache",), formats_of(OLD), kernel)
    assert plan.defines["HAVE_CACHE_ALLOC"] == 1 and plan.defines["HAVE_CACHE_ALLOC_NODE"] == 1
    assert (plan.defines["CACHE_NAME_FROM_PAGE"], plan.defines["CACHE_NAME_FROM_STRUCT"]) == (1, 0)
    assert plan.defines["PAGE_OFFSET_BASE_ADDR"] == X86_VARIABLES["page_offset_base"]
    assert (plan.defines["STRUCT_PAGE_SIZE"], plan.defines["PAGE_COMPOUND_HEAD_OFFSET"],
            plan.defines["PAGE_SLAB_CACHE_OFFSET"], plan.defines["KMEM_CACHE_NAME_OFFSET"]) == (64, 8, 24, 96)
    assert plan.probes == (cache_names.FROM_PAGE,) and plan.notes == ()


@pytest.mark.parametrize("kernel", [
    FakeKernel({"kmem_cache": KMEM_CACHE, "page": PAGE}, {}),  # kallsyms hidden (not root)
    FakeKernel({"kmem_cache": KMEM_CACHE}, X86_VARIABLES),  # 6.1+: no slab_cache in struct page
    FakeKernel({"kmem_cache": KMEM_CACHE, "page": PAGE}, X86_VARIABLES, machine="aarch64"),
], ids=["no-addresses", "no-slab-cache", "not-x86"])
def test_without_the_page_walk_caches_go_by_size(kernel):
    plan = tracepoints.plan_tracing(("cache",), formats_of(OLD), kernel)
    assert plan.defines["CACHE_NAME_FROM_PAGE"] == 0 and plan.probes == ()
    assert plan.notes == (cache_names.BY_SIZE + cache_names.NEEDS_PAGE,)


def test_kernels_with_the_name_field_ask_nothing():
    kernel = FakeKernel({"kmem_cache": KMEM_CACHE, "page": PAGE}, X86_VARIABLES)
    plan = tracepoints.plan_tracing(KERNEL_KINDS, formats_of(NEW), kernel)
    assert kernel.asked == [] and plan.probes == () and plan.defines["CACHE_NAME"] == 1


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
