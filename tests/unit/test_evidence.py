"""Kernel contents: which objects a row samples, how alike they are, and the
kernel symbols their words point at (pure; no kernel needed)."""
from __future__ import annotations

from leaktrace.judge import evidence
from leaktrace.aggregate import AggregateResult
from leaktrace.base.config import ReportConfig
from leaktrace.base.model import Allocation, Site, Snapshot, StackKey
from leaktrace.judge.reach.content import similarity
from leaktrace.symbolize import build_report
from leaktrace.symbols.kallsyms import POINTER_TYPES, KernelSymbols

KALLSYMS = """\
ffffffff81200000 T do_eventfd
ffffffff81200400 t eventfd_read
ffffffff8244f0c0 r eventfd_fops
ffffffff8244f200 r anon_pipe_buf_ops
ffffffff8244f280 d some_data
ffffffffc0001000 t bond_vminfo_add\t[bonding]
"""
FOPS = 0xFFFFFFFF8244F0C0
STACK, OTHER = StackKey(0, 7), StackKey(0, 8)


def word(value: int) -> bytes:
    return value.to_bytes(8, "little")


def site(key, stacks=(STACK,), kind="cache", pid=0, cache="") -> Site:
    return Site(key=key, bytes=0, count=0, oldest_ns=0, stacks=stacks, kind=kind, pid=pid, cache=cache)


def alloc(address, pid=10, stack=STACK, kind="cache", cache="filp", t=0) -> Allocation:
    return Allocation(pid=pid, address=address, size=192, timestamp_ns=t, stack=stack, kind=kind, cache=cache)


def test_pointer_names_cover_text_and_data_and_modules():
    names = KernelSymbols(text=KALLSYMS, types=POINTER_TYPES).name
    assert names(FOPS) == "eventfd_fops"
    assert names(FOPS + 8) == "eventfd_fops+0x8"
    assert names(0xFFFFFFFF81200404) == "eventfd_read+0x4"
    assert names(0xFFFFFFFFC0001010) == "bond_vminfo_add+0x10 [bonding]"
    assert names(0xFFFF888102F1C300) is None  # a heap address is below every symbol
    # Stacks keep to functions: data symbols do not name frames.
    assert KernelSymbols(text=KALLSYMS).name(FOPS) is None


def test_choose_keeps_each_sites_oldest_slab_objects():
    allocations = [alloc(0x1000 + i, t=100 - i) for i in range(20)]
    allocations += [alloc(0x9000, kind="page"), alloc(0xA000, stack=OTHER), alloc(0xB000, pid=11),
                    alloc(0xC000, cache="dentry")]
    by_pid = evidence.choose([site("a", pid=10, cache="filp")], allocations, per_site=4)
    assert [a.address for a in by_pid["a"]] == [0x1000 + 19, 0x1000 + 18, 0x1000 + 17, 0x1000 + 16]
    everyone = evidence.choose([site("b", kind="mixed")], allocations, per_site=100)
    # Pages are not read; every slab object of the stack is, whatever its process or cache.
    assert {a.address for a in everyone["b"]} == {0x1000 + i for i in range(20)} | {0xB000, 0xC000}
    assert evidence.choose([site("c", stacks=(StackKey(0, 99),))], allocations) == {}


def test_choose_reads_only_the_heaviest_sites_when_every_site_is_shown():
    stacks = [StackKey(0, n) for n in range(evidence.MAX_SITES + 5)]
    sites = [site(f"s{n}", stacks=(key,)) for n, key in enumerate(stacks)]
    chosen = evidence.choose(sites, [alloc(0x1000 + n, stack=key) for n, key in enumerate(stacks)])
    assert sorted(chosen, key=lambda k: int(k[1:])) == [f"s{n}" for n in range(evidence.MAX_SITES)]


def test_pointers_count_objects_per_offset_and_symbol():
    lookup = KernelSymbols(text=KALLSYMS, types=POINTER_TYPES).name
    heads = [bytes(16) + word(FOPS) + word(0xFFFF888100000000 + i) for i in range(3)]
    heads.append(word(FOPS) + bytes(24))  # the same symbol at another offset
    found = evidence.pointers(heads, lookup)
    assert [(p.offset, p.address, p.symbol, p.objects) for p in found] == [
        (16, FOPS, "eventfd_fops", 3), (0, FOPS, "eventfd_fops", 1)]
    assert evidence.pointers([bytes(32), b"\xff" * 32], lookup) == ()


def test_row_contents_and_word_similarity():
    lookup = KernelSymbols(text=KALLSYMS, types=POINTER_TYPES).name
    allocations = [alloc(0x1000 + 8 * i) for i in range(5)]
    heads = {a.address: word(FOPS) + word(i) for i, a in enumerate(allocations[:4])}  # the 5th was freed
    row = evidence.row_contents(allocations, heads, lookup)
    assert row.sampled == 4 and len(row.samples) == 3 and row.samples[0].head == word(FOPS) + word(0)
    assert row.similarity == 0.625  # word 0 agrees in 4 of 4, word 1 in 1 of 4
    assert row.pointers[0].symbol == "eventfd_fops" and row.pointers[0].objects == 4
    assert evidence.row_contents(allocations, {}, lookup) is None


def test_similarity_by_word_or_byte():
    heads = [word(1) + word(2), word(1) + word(3)]
    assert similarity(heads, 8) == 0.75
    assert similarity(heads) == 15.5 / 16  # only one byte differs
    assert similarity(heads[:1], 8) is None


def test_rows_get_their_sites_contents():
    snap = Snapshot(mode="kernel", taken_ns=0, started_ns=0, wall_time=0.0, buckets=(), stacks={})
    result = AggregateResult(sites=(site("a"), site("b")), totals={}, sites_total=2)
    contents = evidence.row_contents([alloc(0x1000)], {0x1000: word(FOPS)}, lambda a: None)
    out = build_report(snap, result, lambda key, raw: (), ReportConfig(), contents={"b": contents})
    assert out.rows[0].contents is None and out.rows[1].contents == contents


def test_a_table_is_named_by_the_functions_it_holds():
    functions = KernelSymbols(text=KALLSYMS)  # text only, as kallsyms without CONFIG_KALLSYMS_ALL
    lookup = KernelSymbols(text=KALLSYMS, types=POINTER_TYPES).name
    read = 0xFFFFFFFF81200400
    row = evidence.row_contents([alloc(0x1000)], {0x1000: word(read) + word(FOPS)}, lookup)
    wanted = evidence.tables_to_read([row], lambda a: functions.lookup(a) is not None)
    assert wanted == [FOPS]  # eventfd_read is a function: nothing to read there
    table = word(0) + word(0xFFFFFFFF81200000) + word(read) + word(read + 4) + word(read)
    named = evidence.with_tables(row, {FOPS: table}, functions.function_at)
    assert {p.symbol: p.holds for p in named.pointers} == {
        "eventfd_read": (), "eventfd_fops": ("do_eventfd", "eventfd_read")}
