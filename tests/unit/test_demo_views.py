"""The demo's side-by-side views, on output captured from a real run
(tests/data/demo/docker: scripts/demo.sh under Docker on this machine):
demo/memleak_side.py (bcc's memleak's top stack, and what leaktrace's report
shows that it does not) and demo/other_views.py (verdict, flame graph, triage).
No root needed: both only read files.
"""
import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CAPTURED = REPO / "tests" / "data" / "demo" / "docker"
MEMLEAK_OUT = CAPTURED / "mem-leak.memleak.txt"
REPORTS = CAPTURED / "mem-leak.reports.jsonl"
TRIAGE = CAPTURED / "mem-leak.triage.json"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"demo_{name}", REPO / "demo" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


memleak_side = load("memleak_side")
other_views = load("other_views")


def final_report() -> dict:
    return json.loads(REPORTS.read_text().splitlines()[-1])


def leaktrace_top(report: dict) -> dict:
    return {"stack": report["stacks"][0], "container": report["targets"][0]["container"]}


TWO_REPORTS = """Attaching to pid 42, Ctrl+C to quit.
[10:00:05] Top 10 stacks with outstanding allocations:
\t999999 bytes in 99 allocations from stack
\t\t0x00000000004011aa\told_report+0x1 [app]
[10:00:10] Top 10 stacks with outstanding allocations:
\t4096 bytes in 1 allocations from stack
\t\t0x00007f0000001000\t[unknown] [libfoo.so]
\t\t0x0000000000401200\tmain+0x20 [app]
\t81920 bytes in 10 allocations from stack
\t\t0x0000000000401100\tfibonacci+0x13 [app]
\t\t0x00007f0000002000\t[unknown]
"""


# ---- memleak_side: reading memleak's output ------------------------------------------------


def test_top_stack_is_the_biggest_of_the_last_report_with_memleaks_own_lines():
    stack = memleak_side.top_stack(TWO_REPORTS)
    assert (stack.bytes, stack.count) == (81920, 10)
    assert stack.symbols == ["fibonacci", "[unknown]"]
    assert stack.lines == TWO_REPORTS.splitlines()[-3:]


def test_captured_memleak_output_is_shown_as_printed():
    text = MEMLEAK_OUT.read_text()
    done = subprocess.run([sys.executable, str(REPO / "demo" / "memleak_side.py"), "show",
                           str(MEMLEAK_OUT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    title, *lines = done.stdout.splitlines()
    assert re.fullmatch(r"top stack of \d+, as memleak printed it:", title)
    assert lines and all(line in text.splitlines() for line in lines)
    assert re.match(r"\t\d+ bytes in \d+ allocations from stack$", lines[0])


def test_memleak_that_printed_no_stack_is_shown_with_its_last_lines(tmp_path):
    failed = tmp_path / "memleak.txt"
    failed.write_text("In file included from <built-in>:2:\n"
                      "./include/linux/kconfig.h:5:10: fatal error: 'generated/autoconf.h' not found\n"
                      "Exception: Failed to compile BPF module <text>\n")
    shown = memleak_side.show(failed.read_text(), None, failed)
    assert shown.startswith(f"memleak printed no stack; its last lines (all of them in {failed}):")
    assert shown.endswith("Exception: Failed to compile BPF module <text>")


# ---- memleak_side: the line on what differs -------------------------------------------------


def test_difference_line_counts_the_frames_each_tool_really_showed():
    memleak = memleak_side.top_stack(MEMLEAK_OUT.read_text())
    report = final_report()
    line = memleak_side.differences(memleak, leaktrace_top(report))
    ours = [f["symbol"] for f in report["stacks"][0]["frames"]]
    cfi = [f["symbol"] for f in report["stacks"][0]["frames"][1:] if f["unwind"] == "cfi"]
    theirs = memleak.symbols
    assert line.startswith("what differs: frames: ")
    assert f"memleak {len(theirs)} frame{'s' * (len(theirs) != 1)} ({' <- '.join(theirs)})" in line
    assert f"leaktrace {len(ours)} frames ({' <- '.join(ours)})" in line
    if cfi:
        assert f"{', '.join(cfi)} found through .eh_frame" in line
    name = report["targets"][0]["container"]["name"]
    assert f"container: memleak names none, leaktrace docker {name}" in line
    assert re.search(r"verdict: memleak gives none, leaktrace leak at \+\d+\.\d KiB/s$", line)
    assert "\n" not in line


def test_difference_line_counts_unknown_frames_and_says_plain_process():
    memleak = memleak_side.top_stack(TWO_REPORTS)
    report = copy.deepcopy(final_report())
    report["targets"][0]["container"] = None
    report["stacks"][0]["frames"][2]["symbol"] = None
    line = memleak_side.differences(memleak, leaktrace_top(report))
    assert "[unknown] symbols: memleak 1, leaktrace 1" in line
    assert "container: memleak names none, leaktrace none (a plain process)" in line


def test_difference_line_when_memleak_printed_nothing():
    line = memleak_side.differences(None, leaktrace_top(final_report()))
    assert "frames: memleak 0 frames (no frame), leaktrace" in line


# ---- other_views ---------------------------------------------------------------------------


def test_other_views_on_the_captured_run(tmp_path):
    svg = tmp_path / "mem-leak.flamegraph.svg"
    svg.write_text("<svg>" + "x" * 2000 + "</svg>")
    done = subprocess.run([sys.executable, str(REPO / "demo" / "other_views.py"), str(REPORTS),
                           str(svg), str(TRIAGE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    verdict, flame, triage = done.stdout.splitlines()
    top = final_report()["stacks"][0]
    assert verdict == f"verdict and growth: leak: {top['verdict_reason'].split(';')[0]}"
    assert flame.startswith(f"flame graph: {svg} (2.0 KiB; leaktrace report mem-leak.reports.jsonl "
                            "--format flamegraph -o mem-leak.flamegraph.svg)")
    assert triage.startswith("triage (")


def test_flamegraph_line_says_when_nothing_was_written(tmp_path):
    line = other_views.flamegraph_line(REPORTS, tmp_path / "none.svg")
    assert line.endswith("wrote nothing")


def triage_pointing_at(pid: int, rank: int) -> dict:
    """The captured triage, with the app's process made the rank-th grower."""
    data = json.loads(TRIAGE.read_text())
    app = {"kind": "process", "name": "app", "level": 12 << 20, "rate": 81000.0, "pid": pid,
           "container": "leaktrace-demo-1-mem-leak", "reclaimable": None}
    others = [dict(app, name=f"other{i}", pid=pid + 1 + i, container="", rate=9e6 - i)
              for i in range(rank - 1)]
    data["growers"] = {"user_anon": others + [app]}
    top = data["growers"]["user_anon"][0]
    data["next_steps"] = [{"category": "user_anon", "command": f"leaktrace attach -p {top['pid']}",
                           "reason": f"{top['name']} (pid {top['pid']}) grows fastest"}]
    return data


def test_triage_line_when_triage_points_at_the_app():
    line = other_views.triage_line(triage_pointing_at(4242, rank=1), 4242)
    assert "next: leaktrace attach -p 4242  # app (pid 4242) grows fastest" in line
    assert "ranked" not in line


def test_triage_line_when_a_busier_process_grows_faster():
    line = other_views.triage_line(triage_pointing_at(4242, rank=3), 4242)
    assert "next: leaktrace attach -p 4243" in line and line.endswith("pid 4242 ranked 3 of 3 growers")


def test_triage_line_when_no_process_was_singled_out():
    data = json.loads(TRIAGE.read_text())
    data["growers"], data["next_steps"] = {}, []
    line = other_views.triage_line(data, 4242)
    assert "no process singled out, so not pid 4242; its first next step: nothing" in line


@pytest.mark.parametrize("script", ["memleak_side.py", "other_views.py"])
def test_view_scripts_explain_themselves(script):
    done = subprocess.run([sys.executable, str(REPO / "demo" / script), "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "usage" in done.stdout
