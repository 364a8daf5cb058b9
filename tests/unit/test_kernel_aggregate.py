"""Kernel-mode snapshots through aggregate and build_report, by each --by key;
cache naming, --kind/--cache parsing and cgroup naming. No root needed:
stacks are symbolized with kallsyms lines captured in tests/data/kallsyms."""
from __future__ import annotations

from pathlib import Path

import pytest

from leaktrace.aggregate import aggregate
from leaktrace.process.cgroups import CgroupPaths
from leaktrace.commands.kernel import check_caches, parse_kinds, split_words
from leaktrace.base.config import ReportConfig
from leaktrace.base.errors import UsageError
from leaktrace.base.model import KERNEL_KINDS, Bucket, RawStack, Snapshot, StackKey
from leaktrace.probes import slabs
from leaktrace.probes.kernel import cache_label, possible_cpus
from leaktrace.symbolize import build_report
from leaktrace.symbols.kallsyms import KernelSymbols

DATA = Path(__file__).resolve().parent.parent / "data"
S = 1_000_000_000
PIPE_INFO, DO_PIPE2, SYS_PIPE2 = 0xffffffff816c7a80, 0xffffffff816c8470, 0xffffffff816c8608
CREATE_FILES, FIFO_OPEN = 0xffffffff816c81f0, 0xffffffff816c7ea0

STACKS = {
    StackKey(0, 1): RawStack((PIPE_INFO, DO_PIPE2, SYS_PIPE2)),
    StackKey(0, 2): RawStack((CREATE_FILES, DO_PIPE2, SYS_PIPE2)),
    StackKey(0, 3): RawStack((FIFO_OPEN,)),
}


def bucket(stack_id, nbytes, count, kind="kmalloc", cache="kmalloc-192", pid=100, comm="holder", cgroup=7):
    return Bucket(stack=StackKey(0, stack_id), start_ns=1 * S, end_ns=2 * S, bytes=nbytes,
                  count=count, kind=kind, cache=cache, pid=pid, comm=comm, cgroup_id=cgroup)


BUCKETS = (
    bucket(1, 192 * 100, 100),                                          # pipe_inode_info
    bucket(2, 256 * 100, 100, kind="cache", cache="filp"),              # struct file
    bucket(2, 192 * 200, 200, kind="cache", cache="dentry", pid=200, comm="other", cgroup=9),
    bucket(3, 4096, 1, kind="page", cache="[page]", pid=200, comm="other", cgroup=9),
    bucket(1, 192 * 3, 3, pid=300, comm="holder", cgroup=7),
)


def snapshot(buckets=BUCKETS):
    return Snapshot(mode="kernel", taken_ns=10 * S, started_ns=0, wall_time=0.0,
                    buckets=tuple(buckets), stacks=STACKS)


def report(group_by, buckets=BUCKETS, cgroup_name=str):
    config = ReportConfig(top=10, older_than_ms=0, group_by=group_by)
    snap = snapshot(buckets)
    symbols = KernelSymbols(text=(DATA / "kallsyms" / "sample.txt").read_text())
    return build_report(snap, aggregate(snap, config), symbols.resolve, config, cgroup_name=cgroup_name)


def test_by_cache_sums_objects_per_cache():
    rows = {r.cache: (r.bytes, r.count) for r in report("cache").rows}
    assert rows == {"kmalloc-192": (192 * 103, 103), "filp": (25600, 100),
                    "dentry": (38400, 200), "[page]": (4096, 1)}


def test_by_process_separates_pids_and_keeps_their_comm():
    rows = {(r.pid, r.comm): r.bytes for r in report("process").rows}
    assert rows == {(100, "holder"): 192 * 100 + 25600, (200, "other"): 38400 + 4096,
                    (300, "holder"): 576}


def test_by_cgroup_groups_across_processes():
    rows = {r.cgroup: r.count for r in report("cgroup").rows}
    assert rows == {"7": 203, "9": 201}


def test_by_stack_keeps_kinds_apart_and_names_frames():
    rows = report("stack").rows
    assert [(r.kind, r.count) for r in rows] == [("cache", 300), ("kmalloc", 103), ("page", 1)]
    assert [f.symbol for f in rows[1].frames] == ["alloc_pipe_info", "do_pipe2", "__x64_sys_pipe2"]
    assert all(r.more_stacks == () for r in rows)


def test_grouped_rows_show_their_next_stacks():
    holder = next(r for r in report("process").rows if r.pid == 100)
    assert holder.frames[0].symbol == "create_pipe_files"  # 25.6 KB beats 19.2 KB
    assert [s[0].symbol for s in holder.more_stacks] == ["alloc_pipe_info"]


def test_cgroup_ids_become_paths(tmp_path):
    (tmp_path / "system.slice").mkdir()
    paths = CgroupPaths(root=str(tmp_path))
    inode = (tmp_path / "system.slice").stat().st_ino
    labelled = report("cgroup", [bucket(1, 10, 1, cgroup=inode)], cgroup_name=paths.label)
    assert labelled.rows[0].cgroup == "/system.slice"


@pytest.mark.parametrize("size, kind, name", [
    (64, 0, "kmalloc-64"), (192, 0, "kmalloc-192"), (1024, 2, "kmalloc-cg-1k"),
    (8192, 1, "kmalloc-rcl-8k"), (128, 3, "dma-kmalloc-128"), (16384, 0, "kmalloc-large"),
])
def test_kmalloc_cache_names_round_trip(size, kind, name):
    assert slabs.kmalloc_cache_name(size, kind) == name
    if name != "kmalloc-large":
        assert slabs.kmalloc_class(name) == (size, kind)


def test_kmalloc_names_match_this_kernels_caches():
    real = {n for n in slabs.parse_slabinfo((DATA / "slabinfo" / "slabinfo.txt").read_text())
            if n.startswith("kmalloc-") and slabs.kmalloc_class(n)}
    assert {"kmalloc-8", "kmalloc-96", "kmalloc-8k", "kmalloc-cg-192", "kmalloc-rcl-4k"} <= real
    for name in real:
        assert slabs.kmalloc_cache_name(*slabs.kmalloc_class(name)) == name


def test_cache_labels_by_kind():
    assert cache_label("cache", b"dentry\0\0\0", 192, 0) == "dentry"
    assert cache_label("cache", b"\0" * 32, 104, 0) == "[object size 104]"
    assert cache_label("kmalloc", b"", 96, 0) == "kmalloc-96"
    assert cache_label("page", b"", 0, 0) == "[page]"


def test_kinds_parsing():
    assert parse_kinds(("kmalloc,page", "page"), ()) == ("kmalloc", "page")
    assert parse_kinds((), ()) == KERNEL_KINDS
    assert parse_kinds((), ("dentry",)) == ("cache",)
    assert parse_kinds((), ("dentry", "kmalloc-64")) == ("kmalloc", "cache")
    with pytest.raises(UsageError, match="unknown allocation kind 'slab'") as error:
        parse_kinds(("slab",), ())
    assert "kmalloc, cache, page, percpu, vmalloc" in error.value.hint


def test_unknown_cache_lists_real_ones():
    known = slabs.parse_slabinfo((DATA / "slabinfo" / "slabinfo.txt").read_text())
    check_caches(("dentry", "kmalloc-64"), known)
    with pytest.raises(UsageError, match="unknown slab cache 'dentri'") as error:
        check_caches(("dentry", "dentri"), known)
    assert "dentry" in error.value.hint
    with pytest.raises(UsageError) as error:
        check_caches(("zzzzzzzz",), known)
    assert error.value.hint.startswith("caches on this kernel: ") and "filp" in error.value.hint


def test_split_words():
    assert split_words(("a,b", " c ", "a")) == ("a", "b", "c")


def test_possible_cpus(tmp_path):
    (tmp_path / "possible").write_text("0-3,6\n")
    assert possible_cpus(str(tmp_path / "possible")) == 5
