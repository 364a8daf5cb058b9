"""`leaktrace diff`: known changes between two recordings (two runs: other
addresses, other stack ids) and between two points of one recording."""
from __future__ import annotations

import json

import pytest

from format_cases import live_report
from leaktrace.cli import main
from leaktrace.judge.compare import compare, stack_signature
from leaktrace.base.model import Frame, Report, ReportRow
from leaktrace.report.recording import RecordingWriter
from leaktrace.commands.diff import parse_point
from leaktrace.base.errors import UsageError

APP = "/tmp/app"


def frames(base, *names):
    """One run's frames: the address base differs per run (ASLR), offsets do not."""
    return tuple(Frame(base + 0x100 * i + 0x1F, n, 0x1F, APP) for i, n in enumerate(names)) + (
        Frame(base + 0x7000, None, 0, "/usr/lib/libc.so.6"),)


def run(base, rows):
    return Report("user", 1_714_000_000.0, 30.0, (), {"bytes": sum(r[1] for r in rows)}, {}, {},
                  tuple(ReportRow(i + 1, nbytes, count, 1.0, frames(base, *names))
                        for i, (names, nbytes, count) in enumerate(rows)))


BEFORE = run(0x555500000000, [(("leak", "main"), 40960, 40), (("cache", "main"), 8192, 8),
                              (("init", "main"), 4096, 1), (("steady", "main"), 100, 1)])
AFTER = run(0x563300000000, [(("leak", "main"), 81920, 80), (("cache", "main"), 4096, 4),
                             (("parser", "main"), 2048, 2), (("steady", "main"), 100, 1)])


def test_known_changes_are_found_and_matched_across_runs():
    changes = {c.frames[0].symbol: c for c in compare(BEFORE, AFTER)}
    assert {k: c.status for k, c in changes.items()} == {
        "leak": "grew", "cache": "shrank", "init": "disappeared", "parser": "appeared", "steady": "same"}
    assert (changes["leak"].bytes_delta, changes["leak"].count_delta) == (40960, 40)
    assert (changes["cache"].bytes_delta, changes["cache"].count_delta) == (-4096, -4)
    assert (changes["init"].bytes_after, changes["parser"].bytes_before) == (0, 0)
    assert [c.frames[0].symbol for c in compare(BEFORE, AFTER)][0] == "leak"  # largest change first


def test_signature_ignores_addresses_but_not_call_sites():
    a, b = BEFORE.rows[0], AFTER.rows[0]
    assert a.frames[0].addr != b.frames[0].addr
    assert stack_signature(a) == stack_signature(b)
    moved = ReportRow(1, 1, 1, 0.0, (Frame(0x1, "leak", 0x40, APP),) + a.frames[1:])
    assert stack_signature(moved) != stack_signature(a)


def save(path, reports):
    writer = RecordingWriter(str(path))
    for r in reports:
        writer.write(r)
    writer.close()
    return str(path)


def test_diff_command_on_two_recordings(tmp_path, capsys):
    a, b = save(tmp_path / "a.rec", [BEFORE]), save(tmp_path / "b.rec", [AFTER])
    assert main(["diff", a, b, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    first = doc["changes"][0]
    assert (first["status"], first["bytes_delta"], first["count_delta"]) == ("grew", 40960, 40)
    assert first["frames"][0]["symbol"] == "leak"
    assert doc["before"]["source"] == a
    assert main(["diff", a, b]) == 0
    table = capsys.readouterr().out
    assert "+40.0 KiB" in table and "disappeared" in table and "appeared" in table


def test_diff_of_two_points_of_one_recording(tmp_path, capsys):
    path = save(tmp_path / "live.rec", live_report())
    assert main(["diff", f"{path}@2", path, "--format", "json"]) == 0
    changes = json.loads(capsys.readouterr().out)["changes"]
    fib = next(c for c in changes if any(f["symbol"] == "fibonacci" for f in c["frames"]))
    assert (fib["status"], fib["bytes_before"], fib["bytes_after"]) == ("grew", 16384, 49152)
    buffer = next(c for c in changes if c is not fib)
    assert buffer["status"] == "same" and buffer["bytes_delta"] == 0


def test_points_parse_and_bad_ones_are_usage_errors(tmp_path):
    assert parse_point("app.rec@12.5") == ("app.rec", 12.5)
    assert parse_point("app.rec") == ("app.rec", None)
    odd = tmp_path / "odd@name.rec"
    odd.write_bytes(b"")
    assert parse_point(str(odd)) == (str(odd), None)  # an existing file named with @
    with pytest.raises(UsageError, match="not a number"):
        parse_point("app.rec@soon")
