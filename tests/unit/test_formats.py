"""Every output format over the same reports (contract), and record -> report
in every format reproducing the live report's numbers."""
from __future__ import annotations

import gzip
import io
import json
import xml.etree.ElementTree as ET

import pytest

from format_cases import CASES, LONG_CXX, live_report, parse_folded
from leaktrace.cli import main
from leaktrace.report.recording import RecordingWriter
from leaktrace.report import REPORTERS, get_reporter, is_binary
from leaktrace.report.flamegraph import build_tree
from leaktrace.report.pprof import build_profile
from leaktrace.report.serialize import report_from_dict
from leaktrace.report.frames import root_first

SVG = "{http://www.w3.org/2000/svg}"


def render(name, report) -> bytes:
    reporter = get_reporter(name)
    out = io.BytesIO() if is_binary(reporter) else io.StringIO()
    reporter.render(report, out)
    value = out.getvalue()
    return value if isinstance(value, bytes) else value.encode("utf-8")


def shown_rows(report):
    return [r for r in report.rows if r.bytes > 0]


def check_table(report, data):
    text = data.decode()
    for row in report.rows:
        assert f"{row.count:,}" in text
    assert ("no outstanding allocations" in text) == (not report.rows)


def check_json(report, data):
    lines = data.decode().splitlines()
    assert len(lines) == 1 and data.isascii()
    assert report_from_dict(json.loads(lines[0])) == report


def check_folded(report, data):
    stacks = parse_folded(data.decode())
    assert sum(stacks.values()) == sum(r.bytes for r in report.rows)
    assert len(stacks) == len({root_first(r) for r in shown_rows(report)})
    for row in shown_rows(report):
        leaf = root_first(row)[-1].replace(";", ":").replace("\n", " ")
        assert any(names[-1] == leaf for names in stacks), leaf


def check_pprof(report, data):
    profile = build_profile(report).__class__.FromString(gzip.decompress(data))
    strings = profile.string_table
    assert [strings[t.type] for t in profile.sample_type] == ["inuse_objects", "inuse_space"]
    assert [tuple(s.value) for s in profile.sample] == [(r.count, r.bytes) for r in report.rows]
    names = {f.id: strings[f.name] for f in profile.function}
    locations = {loc.id: names[loc.line[0].function_id] for loc in profile.location}
    for sample, row in zip(profile.sample, report.rows):
        assert len(sample.location_id) == len(row.frames)  # leaf first, as pprof wants
        if row.frames and row.frames[0].symbol:
            assert locations[sample.location_id[0]] == row.frames[0].symbol


def check_svg(report, data):
    root = ET.fromstring(data)
    assert root.tag == f"{SVG}svg"
    text = "".join(root.itertext())
    return root, text


def check_flamegraph(report, data):
    root, text = check_svg(report, data)
    boxes = root.findall(f"{SVG}g")
    names = {g.get("data-n") for g in boxes}
    for row in shown_rows(report):
        assert set(root_first(row)) <= names
    if shown_rows(report):
        widths = {g.get("data-n"): float(g.get("data-w")) for g in boxes}
        assert widths["all"] == 1.0
    else:
        assert "no outstanding allocations" in text


def check_plot(report, data):
    root, text = check_svg(report, data)
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == len(report.rows[:8])
    if not report.rows:
        assert "no outstanding allocations" in text


CHECKS = {"table": check_table, "json": check_json, "folded": check_folded, "pprof": check_pprof,
          "flamegraph": check_flamegraph, "plot": check_plot}


def test_every_registered_format_has_a_contract_check():
    assert set(CHECKS) == set(REPORTERS)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(REPORTERS))
def test_format_contract(name, case):
    report = CASES[case]
    CHECKS[name](report, render(name, report))


def test_long_cxx_symbols_survive_whole_where_the_format_keeps_names():
    report = CASES["unicode_cxx"]
    assert LONG_CXX in parse_folded(render("folded", report).decode()).__repr__()
    assert LONG_CXX in build_tree(report).children["main"].children[LONG_CXX].name


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "app.rec"
    writer = RecordingWriter(str(path))
    for report in live_report():
        writer.write(report)
    writer.close()
    return path


@pytest.mark.parametrize("name", sorted(REPORTERS))
def test_recording_renders_offline_as_the_live_report(name, recording, tmp_path):
    """record -> `leaktrace report FILE --format NAME` == rendering the live report."""
    live = live_report()[-1]
    out = tmp_path / f"out.{name}"
    assert main(["report", str(recording), "--format", name, "-o", str(out)]) == 0
    if name == "plot":
        series = io.StringIO()
        get_reporter("plot").render_series(live_report(), series)
        assert out.read_text() == series.getvalue()
    else:
        assert out.read_bytes() == render(name, live)
    CHECKS[name](live, out.read_bytes())


def test_report_at_a_time_picks_that_interval(recording, tmp_path):
    out = tmp_path / "at.json"
    assert main(["report", str(recording), "--format", "json", "--at", "4.5", "-o", str(out)]) == 0
    assert report_from_dict(json.loads(out.read_text())) == live_report()[1]


def test_plot_of_a_recording_draws_each_stack_over_every_interval(recording, tmp_path):
    out = tmp_path / "plot.svg"
    assert main(["report", str(recording), "--format", "plot", "-o", str(out)]) == 0
    root = ET.fromstring(out.read_bytes())
    lines = root.findall(f"{SVG}polyline")
    assert [len(line.get("points").split()) for line in lines] == [3, 3]
    # the leak climbs: its y values fall (SVG y grows downwards)
    ys = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    assert ys == sorted(ys, reverse=True) and ys[0] > ys[-1]
    assert "fibonacci [leak]" in "".join(root.itertext())
