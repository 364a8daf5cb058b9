"""Verdicts on /proc sequences captured on a real machine (tests/data/triage).

Each capture ran one of the C programs beside it while capture.py copied
/proc four times a second apart; see tests/data/triage/README.md.
"""
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from leaktrace.triage import read_capture, triage

DATA = Path(__file__).parents[1] / "data" / "triage"


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    def load_capture(name):
        target = tmp_path_factory.mktemp(name)
        with tarfile.open(DATA / f"{name}.tar.gz") as archive:
            archive.extractall(target)
        return read_capture(target)

    return load_capture


def verdicts(result):
    return {v.category: v for v in result.verdicts}


def test_growing_process_is_a_user_leak_with_its_rate(load):
    result = triage(load("growing_process"))
    user = verdicts(result)["user_anon"]
    assert user.verdict == "leak" and user.exhaust_s > 0
    top = result.growers["user_anon"][0]
    # grow_heap 400 100: 400 KiB every 100 ms.
    assert top.name == "tri_grow_heap"
    assert top.rate == pytest.approx(4000 * 1024, rel=0.2)
    step = next(s for s in result.next_steps if s.category == "user_anon")
    assert step.command == f"leaktrace attach -p {top.pid}"


def test_process_exiting_during_sampling_is_noted_not_ranked(load):
    result = triage(load("growing_process"))
    assert any("exited during sampling" in note for note in result.notes)
    assert [g.name for g in result.growers["user_anon"]] == ["tri_grow_heap"]


def test_open_files_grow_filp_an_unreclaimable_cache(load):
    result = triage(load("unreclaimable_cache"))
    assert verdicts(result)["slab_unreclaimable"].verdict == "leak"
    top = result.growers["slab_unreclaimable"][0]
    assert (top.name, top.reclaimable) == ("filp", False)
    assert "leaktrace kernel --cache filp" in [s.command for s in result.next_steps]


def test_negative_dentries_are_a_reclaimable_cache_not_a_leak(load):
    result = triage(load("dentry_growth"))
    reclaimable = verdicts(result)["slab_reclaimable"]
    assert reclaimable.verdict == "cache" and reclaimable.exhaust_s is None
    top = result.growers["slab_reclaimable"][0]
    assert (top.name, top.reclaimable) == ("dentry", True)
    step = next(s for s in result.next_steps if s.category == "slab_reclaimable")
    assert step.command == "leaktrace kernel --cache dentry"
    assert "reclaimable" in step.reason


def test_thread_stacks_grow_vmalloc_under_kernel_clone(load):
    result = triage(load("vmalloc_growth"))
    assert verdicts(result)["vmalloc"].verdict == "leak"
    assert result.growers["vmalloc"][0].name == "kernel_clone"
    assert "leaktrace kernel --kind vmalloc" in [s.command for s in result.next_steps]


def test_quiet_machine_is_stable_with_no_next_step(load):
    result = triage(load("stable"))
    assert {v.verdict for v in result.verdicts} == {"stable"}
    assert result.next_steps == () and result.growers == {}


def test_non_root_says_what_is_missing_and_still_ranks_processes(load):
    capture = load("non_root")
    assert all(s.slabs is None and s.vmalloc is None for s in capture.samples)
    result = triage(capture)
    assert any("/proc/slabinfo" in note for note in result.notes)
    assert any("/proc/vmallocinfo" in note for note in result.notes)
    assert result.growers["user_anon"][0].name == "tri_grow_heap"


def test_window_too_short_gives_unknown_and_says_so(load):
    capture = load("stable")
    first = capture.samples[0]
    instant = replace(capture, samples=(first, replace(first, time_s=first.time_s + 0.05)))
    result = triage(instant)
    assert {v.verdict for v in result.verdicts} == {"unknown"}
    assert all(v.rate is None for v in result.verdicts)
    assert any("window too short" in note for note in result.notes)
