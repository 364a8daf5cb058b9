"""Recordings: exact round trips, and every complete interval survives a
writer killed with SIGKILL or a file cut mid-interval."""
from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from format_cases import CASES, live_report
from leaktrace.cli import main
from leaktrace.base.errors import LeaktraceError, UsageError
from leaktrace.report.recording import FORMAT, RecordingWriter, read_recording, select
from leaktrace.report.json_report import JsonReporter

REPO = Path(__file__).resolve().parents[2]


def record(path, reports):
    writer = RecordingWriter(str(path))
    for report in reports:
        writer.write(report)
    writer.close()
    return path


def test_round_trip_keeps_every_interval_exactly(tmp_path):
    reports = live_report() + tuple(CASES.values())
    saved = read_recording(str(record(tmp_path / "a.rec", reports)))
    assert saved.reports == reports and not saved.truncated
    assert saved.header["format"] == FORMAT and saved.header["version"] == 1


def test_zcat_shows_a_header_then_one_report_per_line(tmp_path):
    path = record(tmp_path / "a.rec", live_report())
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert json.loads(lines[0])["format"] == FORMAT
    assert [json.loads(line)["elapsed_s"] for line in lines[1:]] == [2.0, 4.0, 6.0]


def test_a_recording_cut_mid_interval_keeps_the_complete_ones(tmp_path):
    path = record(tmp_path / "a.rec", live_report())
    data = path.read_bytes()
    path.write_bytes(data[:-25])  # the last member loses its end
    saved = read_recording(str(path))
    assert saved.truncated and saved.reports == live_report()[:2]


def test_a_damaged_member_is_called_corrupt_not_cut_off(tmp_path, capsys):
    path = record(tmp_path / "a.rec", live_report())
    data = bytearray(path.read_bytes())
    members = [i for i in range(len(data) - 1) if data[i:i + 3] == b"\x1f\x8b\x08"]
    third = members[3]  # header, report 1, report 2, report 3: damage report 3's deflate data
    data[third + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    saved = read_recording(str(path))
    assert saved.reports == live_report()[:2] and not saved.truncated
    assert "gzip member 4 is damaged" in saved.damage
    assert main(["report", str(path), "--format", "json"]) == 0
    err = capsys.readouterr().err
    assert "is corrupt" in err and "cut off" not in err


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from format_cases import live_report
from leaktrace.report.recording import RecordingWriter
writer = RecordingWriter(sys.argv[1])
report = live_report()[-1]
for i in range(10000):
    writer.write(report)
    print(i, flush=True)
    time.sleep(0.01)
"""


def test_recording_survives_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "killed.rec"
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parent)), str(path)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    written = [proc.stdout.readline() for _ in range(30)]
    during = read_recording(str(path))  # read while it writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = read_recording(str(path))
    assert len(during.reports) >= 30 and all(written)
    assert len(after.reports) >= len(during.reports)
    assert all(r == live_report()[-1] for r in after.reports)


def test_plain_json_lines_are_read_too(tmp_path):
    path = tmp_path / "out.jsonl"
    with open(path, "w") as out:
        for report in live_report():
            JsonReporter().render(report, out)
    assert read_recording(str(path)).reports == live_report()


def test_select_by_seconds_of_tracing():
    reports = live_report()
    assert select(reports, 4.0)[-1] == reports[1]
    assert select(reports, None) == reports
    with pytest.raises(UsageError, match="covers 2..6 s"):
        select(reports, 1.0)
    with pytest.raises(UsageError, match="no complete interval"):
        select((), None)


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(LeaktraceError, match="no such recording"):
        read_recording(str(tmp_path / "missing.rec"))
    garbage = tmp_path / "garbage.rec"
    garbage.write_bytes(b"\x00\xff\xfe not a recording")
    assert main(["report", str(garbage)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("leaktrace: ") and len(err.strip().splitlines()) == 1
    header_only = record(tmp_path / "empty.rec", ())
    assert main(["report", str(header_only)]) == 64
    assert "no complete interval" in capsys.readouterr().err


def test_record_option_is_offered_by_every_tracing_command():
    from leaktrace.cli import cli

    for name in ("attach", "run", "kernel"):
        command = cli.get_command(None, name)
        assert "--record" in {o for p in command.params for o in p.opts}, name


def test_live_sinks_record_every_interval_and_rewrite_whole_file_formats(tmp_path):
    from format_cases import live_report as reports
    from leaktrace.commands.options import recording_sink, report_sink
    from leaktrace.base.config import OutputConfig
    from leaktrace.report.pprof import PprofReporter
    import io

    out, rec = tmp_path / "live.pb.gz", tmp_path / "live.rec"
    output = OutputConfig(format="pprof", path=str(out), record=str(rec))
    with report_sink(output) as render, recording_sink(output) as save:
        for report in reports():
            save(report)
            render(report)
    latest = io.BytesIO()
    PprofReporter().render(reports()[-1], latest)
    assert out.read_bytes() == latest.getvalue()  # the file holds the latest interval
    assert read_recording(str(rec)).reports == reports()
    with recording_sink(OutputConfig(record=None)) as save:
        assert save is None
    with pytest.raises(UsageError, match="writes one file per report"):
        with report_sink(OutputConfig(format="flamegraph", path=None, record=None)):
            pass
