"""Each format read by the program people use it with, not by our own code:
protoc's compilation of profile.proto and `go tool pprof` for pprof, a
flamegraph.pl-rule parser for folded stacks, headless Chromium for the SVGs."""
from __future__ import annotations

import gzip
import os
import re
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from format_cases import CASES, live_report, parse_folded, tool
from leaktrace.report.flamegraph import render_svg
from leaktrace.report.plot import TITLE, render_lines, series_of
from leaktrace.report.pprof import PprofReporter
from leaktrace.report.profile_proto import file_descriptor

PROTO = Path(__file__).resolve().parents[2] / "leaktrace" / "report" / "profile.proto"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-component-update", "--disable-sync")


def write_pprof(report, path: Path) -> Path:
    with open(path, "wb") as out:
        PprofReporter().render(report, out)
    return path


@pytest.fixture(scope="module")
def protoc_schema(tmp_path_factory):
    """profile.proto compiled by protoc: the Profile class of the shipped schema."""
    protoc = tool("protoc")
    out = tmp_path_factory.mktemp("proto") / "profile.desc"
    subprocess.run([protoc, f"--proto_path={PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name],
                   check=True, capture_output=True)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    return files.file[0], message_factory.GetMessageClass(
        pool.FindMessageTypeByName("perftools.profiles.Profile"))


def test_descriptor_built_in_code_matches_the_shipped_proto(protoc_schema):
    compiled, _ = protoc_schema
    ours = file_descriptor()

    def fields(fdp):
        return {(m.name, f.name, f.number, f.type, f.label, f.type_name)
                for m in fdp.message_type for f in m.field}
    assert fields(ours) == fields(compiled)


def test_pprof_parses_with_the_shipped_schema(protoc_schema, tmp_path):
    _, profile_class = protoc_schema
    report = live_report()[-1]
    profile = profile_class.FromString(gzip.decompress(write_pprof(report, tmp_path / "p.pb.gz").read_bytes()))
    strings = profile.string_table
    assert strings[0] == "" and strings[profile.default_sample_type] == "inuse_space"
    assert [list(s.value) for s in profile.sample] == [[r.count, r.bytes] for r in report.rows]
    labels = {strings[l.key]: strings[l.str] for l in profile.sample[0].label}
    assert labels["verdict"] == "leak"


@pytest.fixture(scope="module")
def go_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("gohome")
    return {**os.environ, "HOME": str(home), "GOCACHE": str(home / "cache"), "GOTOOLCHAIN": "local",
            "GOPROXY": "off", "GOFLAGS": ""}


def pprof_top(path: Path, env, *args) -> str:
    done = subprocess.run([tool("go"), "tool", "pprof", "-top", *args, str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_go_tool_pprof_reads_the_profile(go_env, tmp_path):
    report = live_report()[-1]
    text = pprof_top(write_pprof(report, tmp_path / "live.pb.gz"), go_env, "-sample_index=inuse_space")
    assert "Type: inuse_space" in text
    total = sum(r.bytes for r in report.rows)
    assert f"Total samples = {total // 1024}kB" in text, text  # pprof kB are KiB
    fib = next(line for line in text.splitlines() if line.rstrip().endswith("fibonacci"))
    assert "48kB" in fib  # cum: 6 x 8 KiB under fibonacci
    objects = pprof_top(tmp_path / "live.pb.gz", go_env, "-sample_index=inuse_objects")
    assert f"Total samples = {sum(r.count for r in report.rows)}" in objects


@pytest.mark.parametrize("case", ["sizes", "unicode_cxx", "deep"])
def test_go_tool_pprof_reads_the_hard_cases(go_env, tmp_path, case):
    text = pprof_top(write_pprof(CASES[case], tmp_path / f"{case}.pb.gz"), go_env)
    assert "fibonacci" in text
    if case == "sizes":
        assert "Total samples = 1TB" in text, text  # 2**40 bytes, no overflow


def test_folded_weights_add_up_under_the_flamegraph_pl_rule():
    from leaktrace.report.folded import FoldedReporter
    import io

    out = io.StringIO()
    FoldedReporter().render(live_report()[-1], out)
    stacks = parse_folded(out.getvalue())
    fib = {names: n for names, n in stacks.items() if "fibonacci" in names}
    assert list(fib.values()) == [6 * 8192]
    (names,) = fib
    assert names[0] == "main" and names[-1] == "malloc"  # root first


def chromium(args, tmp_path, timeout=120) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([tool("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_flamegraph_opens_in_chromium_and_zooms_on_click(tmp_path):
    svg = render_svg(live_report()[-1])
    # Click fibonacci's box once the script is live, as a user would.
    click = ("<script><![CDATA[document.querySelector('g.f[data-n=\"fibonacci\"]')"
             ".dispatchEvent(new MouseEvent('click'));]]></script></svg>")
    page = tmp_path / "zoomed.svg"
    page.write_text(svg.replace("</svg>", click), encoding="utf-8")
    done = chromium(["--dump-dom", page.as_uri()], tmp_path)
    dom = done.stdout
    assert "fibonacci" in dom, done.stderr[-2000:]
    box = re.search(r'data-n="fibonacci"[^>]*>.*?<rect x="([\d.]+)"[^>]*width="([\d.]+)"', dom, re.S)
    assert box and float(box.group(1)) == 0 and float(box.group(2)) > 1190  # zoomed to full width
    hidden = re.search(r'<g class="f" data-n="Cache[^"]*"[^>]*style="display: none;"', dom)
    assert hidden or 'data-n="händler_π"' not in dom


def test_flamegraph_and_plot_screenshots_render(tmp_path):
    files = {"flame.svg": render_svg(live_report()[-1]),
             "plot.svg": render_lines(series_of(live_report()), TITLE)}
    for name, text in files.items():
        page = tmp_path / name
        page.write_text(text, encoding="utf-8")
        png = tmp_path / (name + ".png")
        chromium([f"--screenshot={png}", "--window-size=1200,600", page.as_uri()], tmp_path)
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name
        dom = chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
        assert "fibonacci" in dom, name
