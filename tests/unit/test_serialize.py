"""Report <-> dict: exact round trips, the documented schema, and bad input as UsageError."""
from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from leaktrace.base.errors import UsageError
from leaktrace.base.model import (Allocation, Container, ContentSample, Frame, KernelPointer, ReachSummary,
                             Report, ReportRow, RowContents, RowReach, StackKey, Target)
from leaktrace.report.json_report import JsonReporter, read_reports
from leaktrace.report.serialize import report_from_dict, report_to_dict
from leaktrace.symbolize import MAX_ALLOCS_PER_SITE

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "json-schema.md"
LONG_CXX = ("std::_Rb_tree<std::basic_string<char>, "
            "std::pair<std::basic_string<char> const, int> >::_M_insert_") * 40

USER_FRAMES = (
    Frame(0x7F3A1C0A50F0, None, 0, "/usr/lib/x86_64-linux-gnu/libc.so.6", unwind="fp"),
    Frame(0x401145, "leak_buffer", 0x1F, "/tmp/leaky", "leaky.c", 12, "fp"),
    Frame(0x4012BF, "händler_π", 0x1F, "/tmp/leaky", "ünïcode.c", None, "cfi", note="build-id mismatch"),
    Frame(0x401530, LONG_CXX, 0x130, "/tmp/leaky", None, None, "scan"),
)
KERNEL_FRAMES = (
    Frame(0xFFFFFFFF8134A1B2, "__kmalloc_node", 0x52, "kernel", unwind="kernel"),
    Frame(0xFFFFFFFF81F00AB0, "do_syscall_64", 0x80, "kernel", unwind="kernel"),
)

USER = Report(
    mode="user", timestamp=1_714_000_000.1 + 0.2, elapsed_s=30.000000001,
    targets=(Target(4242, "leaky", "/tmp/leaky", "/usr/lib/x86_64-linux-gnu/libc.so.6", "glibc",
                    Container("docker", "3f2a1b9c8d7e", "wéb", "leaky:1"),
                    hooked=(("/usr/lib/x86_64-linux-gnu/libc.so.6", ("malloc", "free")),
                            ("/opt/lib/libjemalloc.so.2", ("_Znwm", "mallocx")))),
             Target(4243, "worker\tüñí", "/tmp/leaky")),
    totals={"bytes": (1 << 40) + 4160, "count": 42}, events={"allocs": 5120, "frees": 4000},
    losses={"stacks_full": 3, "allocs_full": 0},
    rows=(ReportRow(1, 1 << 40, 1, 312.5, USER_FRAMES, "mmap", 4242, "leaky",
                    bytes_older=(1 << 40,) * 3),
          ReportRow(2, 4160, 41, 0.268435456, (Frame(0, note="stack not collected"),), "heap", 4243,
                    "worker\tüñí", bytes_older=(4160, 0, 0), estimated=True)),
    allocations=(Allocation(4242, 0x7F3A00000000, 1 << 40, 11_000_000_000_000,
                            StackKey(4242, 17), "mmap"),),
    warnings=("most stacks are only 1-2 frames deep", "naïve ✓"),
    probes=("per-thread call state in BPF task storage",),
    group_by="stack", sample_rate=4096, older_than_ms=500, sites_total=97, taken_ns=11_234_567_890_123,
)
FILP_HEAD = bytes(16) + (0xFFFFFFFF8244F0C0).to_bytes(8, "little")  # f_op = eventfd_fops
KERNEL = Report(
    mode="kernel", timestamp=1_714_000_100.0, elapsed_s=0.0, targets=(),
    totals={"bytes": 8192, "count": 2}, events={}, losses={},
    rows=(ReportRow(1, 8192, 2, 61.0, KERNEL_FRAMES, "cache", cache="dentry", cgroup="7781",
                    bytes_older=(8192, 8192, 8192), contents=RowContents(
                        sampled=2, similarity=0.75,
                        samples=(ContentSample(0xFFFF888102F1C300, 192, FILP_HEAD),),
                        pointers=(KernelPointer(16, 0xFFFFFFFF8244F0C0, "__start_rodata+0x4f0c0", 2,
                                                holds=("eventfd_read", "eventfd_write")),))),),
    allocations=(Allocation(7781, 0xFFFF888102F1C300, 192, 5, StackKey(0, 3), "cache", "filp"),),
    group_by="cache", older_than_ms=0, sites_total=1,
)
EMPTY = Report(mode="user", timestamp=0.0, elapsed_s=1.5, targets=(), totals={"bytes": 0, "count": 0},
               events={}, losses={}, rows=())
ROW_REACH = RowReach(bytes=(1920, 0, 96), counts=(20, 0, 1), similarity=0.890625, samples=(
    ContentSample(0x562DC6CC3670, 96, b"request #0 GET /\x00\xff", "unreferenced"),
    ContentSample(0x562DC6CC36E0, 96, b"", "reachable")))
REACHED = replace(USER, rows=(replace(USER.rows[0], reach=ROW_REACH), USER.rows[1]),
                  reach=ReachSummary(scanned_bytes=75_673, elapsed_s=0.04, frozen_s=0.002, threads=3,
                                     bytes=(1920, 768, 4915), counts=(21, 6, 13),
                                     problems=("PID 4243 exited before its memory was scanned",)))
REPORTS = {"user": USER, "kernel": KERNEL, "empty": EMPTY, "reached": REACHED}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_round_trip_is_exact(name):
    report = REPORTS[name]
    assert report_from_dict(report_to_dict(report)) == report


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_round_trip_through_a_json_line_is_exact(name):
    out = io.StringIO()
    JsonReporter().render(REPORTS[name], out)
    line = out.getvalue()
    assert line.count("\n") == 1 and line.isascii()
    assert list(read_reports([line])) == [REPORTS[name]]


def test_hooked_is_an_object_of_symbol_lists_and_a_bad_one_is_a_clean_error():
    data = report_to_dict(USER)
    assert data["targets"][0]["hooked"] == {"/usr/lib/x86_64-linux-gnu/libc.so.6": ["malloc", "free"],
                                            "/opt/lib/libjemalloc.so.2": ["_Znwm", "mallocx"]}
    assert data["targets"][1]["hooked"] == {}
    del data["targets"][1]["hooked"]  # reports written before the field read back
    assert report_from_dict(data).targets[1].hooked == ()
    data["targets"][0]["hooked"] = {"/lib/x.so": "malloc"}
    with pytest.raises(UsageError, match="hooked"):
        report_from_dict(data)


def test_a_stream_of_interval_reports_reads_back_in_order():
    out = io.StringIO()
    for report in (USER, EMPTY, KERNEL):
        JsonReporter().render(report, out)
    assert list(read_reports(io.StringIO(out.getvalue() + "\n"))) == [USER, EMPTY, KERNEL]


def test_derived_and_encoded_fields():
    d = report_to_dict(USER)
    assert (d["schema"], d["pid"], report_to_dict(KERNEL)["pid"]) == (1, 4242, None)
    row = d["stacks"][1]
    assert (row["avg_size"], row["bytes_older"]) == (101, {"1s": 4160, "10s": 0, "60s": 0})
    assert d["stacks"][0]["frames"][1]["addr"] == "0x401145"
    assert report_to_dict(KERNEL)["stacks"][0]["frames"][0]["addr"] == "0xffffffff8134a1b2"
    assert d["allocations"][0]["address"] == "0x7f3a00000000"
    assert d["stacks"][0]["frames"][0]["symbol"] is None
    assert d["reachability"] is None and d["stacks"][0]["reachability"] is None


def test_reachability_keys():
    d = report_to_dict(REACHED)
    assert d["reachability"]["unreferenced"] == {"bytes": 1920, "count": 21}
    assert d["reachability"]["problems"] == ["PID 4243 exited before its memory was scanned"]
    sample = d["stacks"][0]["reachability"]["samples"][0]
    assert sample == {"address": "0x562dc6cc3670", "size": 96, "class": "unreferenced",
                      "hex": b"request #0 GET /\x00\xff".hex(), "text": "request #0 GET /.."}


def documented_keys():
    """Keys named in the first column of the schema's tables."""
    return set(re.findall(r"^\| `(\w+)` \|", SCHEMA_DOC.read_text(), re.MULTILINE))


def emitted_keys(value):
    if isinstance(value, dict):
        return set(value) | set().union(*(emitted_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(emitted_keys(v) for v in value))
    return set()


def test_every_emitted_key_is_documented():
    counters = {"bytes", "count", "allocs", "frees", "stacks_full", "allocs_full", "1s", "10s", "60s",
                "runtime", "id", "name", "image", "stack_id"}  # documented inline, not as table rows
    counters |= {obj for target in USER.targets for obj, _ in target.hooked}  # hooked's keys are objects
    emitted = emitted_keys(report_to_dict(REACHED)) | emitted_keys(report_to_dict(KERNEL))
    assert emitted - counters <= documented_keys()
    assert f"at most {MAX_ALLOCS_PER_SITE} per site" in SCHEMA_DOC.read_text()


def test_the_documented_example_is_a_valid_report():
    example = re.search(r"```json\n(.*?)```", SCHEMA_DOC.read_text(), re.DOTALL).group(1)
    report = report_from_dict(json.loads(example))
    assert report.rows[0].frames[0].symbol == "leak_buffer"
    assert report.rows[0].frames[0].addr == 0x401145


def broken(path, value):
    """USER as a dict with the value at path (a tuple of keys/indexes) replaced or deleted."""
    d = json.loads(json.dumps(report_to_dict(USER)))
    *parents, last = path
    holder = d
    for key in parents:
        holder = holder[key]
    if value is KeyError:
        del holder[last]
    else:
        holder[last] = value
    return d


@pytest.mark.parametrize("path, value, words", [
    (("stacks",), KeyError, "no 'stacks'"),
    (("schema",), 2, "schema 2"),
    (("stacks", 0, "bytes"), "1024", "'bytes'"),
    (("stacks", 0, "count"), True, "'count'"),
    (("stacks", 0, "frames", 1, "addr"), "main+0x1f", "hex address"),
    (("targets", 0, "container"), "docker", "'container'"),
    (("losses", "stacks_full"), 1.5, "'stacks_full'"),
    (("allocations", 0, "stack"), KeyError, "no 'stack'"),
])
def test_malformed_reports_are_usage_errors(path, value, words):
    with pytest.raises(UsageError) as e:
        report_from_dict(broken(path, value))
    assert words in e.value.message
    assert "\n" not in e.value.message and e.value.hint


def test_a_document_that_is_not_an_object_is_a_usage_error():
    with pytest.raises(UsageError, match="report is list"):
        report_from_dict([1, 2])


def test_a_garbled_line_names_its_line_number():
    good = json.dumps(report_to_dict(EMPTY))
    with pytest.raises(UsageError, match="line 2 is not JSON"):
        list(read_reports([good, '{"schema": 1, "mode": "us']))
    with pytest.raises(UsageError, match="line 3: .*no 'mode'"):
        list(read_reports([good, "", json.dumps({"schema": 1})]))


def test_floats_that_json_writes_as_integers_read_back_as_floats():
    d = report_to_dict(replace(EMPTY, elapsed_s=2.0))
    d["elapsed_s"] = 2  # another writer may drop the ".0"
    assert isinstance(report_from_dict(d).elapsed_s, float)


def test_the_table_header_says_what_was_hooked_in_which_object():
    from leaktrace.report.table import TableReporter
    out = io.StringIO()
    TableReporter().render(USER, out)
    lines = out.getvalue().splitlines()
    assert "hooked in pid 4242: libc.so.6 (malloc, free); libjemalloc.so.2 (_Znwm, mallocx)" in lines
    assert not any(line.startswith("hooked in pid 4243") for line in lines)  # nothing known: no line
