"""Evidence in --out (agent/evidence.py), findings (agent/findings.py) and
/metrics (agent/exporter.py), on reports made the live way."""
import gzip
import json
import os

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from format_cases import live_report, reached_report
from leaktrace.judge import trend
from leaktrace.agent.escalate import Outcome, Request
from leaktrace.agent.evidence import EVENTS, PROFILE, RECORDING, VERDICTS, EvidenceStore
from leaktrace.agent.exporter import AgentCollector, AgentState
from leaktrace.agent.findings import event, top_sites
from leaktrace.agent.watch import Judged, Key
from leaktrace.base.errors import UsageError
from leaktrace.report.recording import read_recording
from leaktrace.report.profile_proto import profile_classes

MiB = 1 << 20
SUSPECT = Judged(Key("process", "app", 4242, 12.0), trend.Trend(trend.GROWING, 8192.0, 0.99, 491520, 60.0, 5 * MiB))
REQUEST = Request("process", 10.0, 2.0, pid=4242)


def store(tmp_path, retain=3, max_bytes=MiB, lines=None):
    return EvidenceStore(str(tmp_path / "out"), retain, max_bytes,
                         (lines if lines is not None else []).append)


def escalate_once(evidence, name):
    directory = evidence.open(name)
    record = evidence.recorder(directory)
    reports = live_report()
    for report in reports:
        record(report)
    record.close()
    files = evidence.finish(directory, reports[-1])
    sites = top_sites(reports[-1], SUSPECT.key.label(), 5)
    evidence.log(event(SUSPECT, REQUEST, Outcome("completed", report=reports[-1]), sites, 12.5, 1e9, files))
    return directory


def test_an_escalation_leaves_a_recording_a_profile_verdicts_and_one_event_line(tmp_path):
    evidence = store(tmp_path)
    evidence.check()
    directory = escalate_once(evidence, "20260101T000000Z-process-4242")
    recording = read_recording(str(directory / RECORDING))
    assert len(recording.reports) == 3 and not recording.truncated
    profile = profile_classes()["Profile"]()
    profile.ParseFromString(gzip.decompress((directory / PROFILE).read_bytes()))
    assert sum(s.value[1] for s in profile.sample) == recording.reports[-1].totals["bytes"]
    verdicts = json.loads((directory / VERDICTS).read_text())
    assert verdicts["stacks"][0]["verdict"] == recording.reports[-1].rows[0].verdict
    [line] = (tmp_path / "out" / EVENTS).read_text().splitlines()
    logged = json.loads(line)
    assert logged["target"] == {"kind": "process", "name": "app", "pid": 4242, "container": ""}
    assert logged["growth"]["rate_bps"] == 8192.0 and logged["trace"]["outcome"] == "completed"
    assert logged["sites"][0]["function"] == "fibonacci" and logged["sites"][0]["comm"] == "app"
    assert sorted(os.path.basename(f) for f in logged["files"]) == [PROFILE, RECORDING, VERDICTS]


def test_retention_keeps_the_newest_escalations_within_count_and_bytes(tmp_path):
    evidence = store(tmp_path, retain=2)
    names = [f"2026010{i}T000000Z-process-1" for i in range(1, 6)]
    for name in names:
        escalate_once(evidence, name)
    assert [p.name for p in evidence.escalations()] == names[-2:]
    tight = store(tmp_path, retain=10, max_bytes=(tmp_path / "out" / EVENTS).stat().st_size + 6000)
    escalate_once(tight, "20260201T000000Z-process-1")
    assert [p.name for p in tight.escalations()] == ["20260201T000000Z-process-1"]


def test_a_failed_write_is_one_line_and_the_store_goes_on(tmp_path):
    lines = []
    evidence = store(tmp_path, lines=lines)
    evidence.check()
    (tmp_path / "out" / "20260101T000000Z-x").write_text("a file where a directory goes")
    assert evidence.open("20260101T000000Z-x") is None
    record = evidence.recorder(None)
    record(live_report()[0])  # no directory: nothing written, nothing raised
    assert evidence.errors == 1 and len(lines) == 1 and "continues" in lines[0]
    escalate_once(evidence, "20260102T000000Z-process-1")
    assert evidence.errors == 1


def test_an_unwritable_out_is_refused_at_start(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="--out"):
        EvidenceStore(str(tmp_path / "file" / "out"), 3, MiB, print).check()


def test_metrics_render_every_family_with_bounded_labels():
    sites = top_sites(live_report()[-1], SUSPECT.key.label(), 5)
    state = AgentState(budget=0.02, processes=(SUSPECT,), sites=sites, active=SUSPECT.key,
                       escalations={("process", "completed"): 2}, losses={"stack_failed": 3},
                       probe_seconds=0.5, overhead=0.001, samples=7)
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: state))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    site = families["leaktrace_site_outstanding_bytes"].samples[0]
    assert site.labels["function"] == "fibonacci" and site.labels["pid"] == "4242"
    growth = families["leaktrace_process_anon_growth_bytes_per_second"].samples[0]
    assert growth.labels == {"pid": "4242", "comm": "app", "container": "", "trend": "growing"}
    assert families["leaktrace_escalations"].samples[0].value == 2
    assert families["leaktrace_losses"].samples[0].labels == {"counter": "stack_failed"}
    assert families["leaktrace_agent_budget_ratio"].samples[0].value == 0.02
    assert families["leaktrace_escalation_active"].samples[0].labels["target"] == "app (pid 4242)"


def test_a_scanned_site_carries_its_classes_in_the_event_and_a_definitely_lost_gauge():
    scanned = reached_report()  # first row: 40 KiB unreferenced, 8 KiB indirectly lost
    sites = top_sites(scanned, SUSPECT.key.label(), 5)
    outcome = Outcome("completed", report=scanned, scan_seconds=0.25)
    logged = event(SUSPECT, Request("process", 10.0, 2.0, pid=4242, reach_max_bytes=MiB), outcome, sites,
                   12.5, 1e9, [])
    assert logged["trace"]["reachability"] and logged["cost"]["scan_seconds"] == 0.25
    assert logged["reachability"]["unreferenced"] == {"bytes": 40960, "count": 5}
    first, second = logged["sites"][:2]
    assert first["reachability"] == {"unreferenced": {"bytes": 40960, "count": 5},
                                     "indirectly_lost": {"bytes": 8192, "count": 1},
                                     "reachable": {"bytes": 0, "count": 0}}
    assert second["reachability"] is None  # a row the scan did not classify
    json.dumps(logged)
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: AgentState(budget=0.02, sites=sites)))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    [lost] = families["leaktrace_site_definitely_lost_bytes"].samples
    assert lost.value == 40960 and lost.labels["function"] == first["function"]


def test_only_an_unsampled_process_trace_is_scanned():
    assert Request("process", 10.0, 2.0, pid=1, reach_max_bytes=MiB).scans
    assert Request("process", 10.0, 2.0, pid=1, reach_max_bytes=MiB, sample_rate=1).scans
    assert not Request("process", 10.0, 2.0, pid=1, reach_max_bytes=MiB, sample_rate=4096).scans
    assert not Request("process", 10.0, 2.0, pid=1).scans
    assert not Request("slab", 10.0, 2.0, cache="dentry", reach_max_bytes=MiB).scans
