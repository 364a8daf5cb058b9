"""Placement decisions reused between runs (leaktrace/probes/placement_cache.py): the
same answer as computing it, no recomputation for a file seen before, and a
fresh decision once the file changes, the cache holds garbage, an offset the
function's bytes do not confirm, or a file others could have written."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from leaktrace.base import cache
from leaktrace.probes import code_index, placement, placement_cache
from leaktrace.probes.placement import place_probe

GLIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture
def libc(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_warned", False)
    copy = tmp_path / "libc.so.6"
    shutil.copy(GLIBC, copy)
    return str(copy)


@pytest.fixture
def computations(monkeypatch):
    """How often placement_cache really ran place_probe."""
    calls = []

    def counted(*args):
        calls.append(args)
        return place_probe(*args)
    monkeypatch.setattr(placement_cache, "place_probe", counted)
    return calls


def test_cached_answer_equals_the_computed_one_and_is_not_recomputed(libc, computations):
    first = placement_cache.placement_for(libc, "free", ("rdi",))
    assert first == place_probe(libc, "free", ("rdi",))
    assert placement_cache.placement_for(libc, "free", ("rdi",)) == first
    assert placement_cache.placement_for(libc, "malloc", ("rdi",)) == place_probe(libc, "malloc", ("rdi",))
    assert len(computations) == 2  # free once, malloc once


def test_a_changed_file_is_decided_again(libc, computations):
    placement_cache.placement_for(libc, "free", ("rdi",))
    stat = os.stat(libc)
    os.utime(libc, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    placement_cache.placement_for(libc, "free", ("rdi",))
    assert len(computations) == 2


def test_garbage_in_the_cache_is_ignored(libc, computations):
    file = placement_cache.cache_file(libc)
    file.write_text('{"free rdi": [4096, "hostile"], "malloc rdi": "x"}')
    decided = placement_cache.placement_for(libc, "free", ("rdi",))
    assert decided == place_probe(libc, "free", ("rdi",))
    assert len(computations) == 1
    file.write_text("not json")
    assert placement_cache.placement_for(libc, "free", ("rdi",)) == decided


def test_a_planted_offset_inside_an_instruction_is_never_used(libc, computations):
    # free starts with a 3-byte `test rdi, rdi`: +2 is inside it.
    right = place_probe(libc, "free", ("rdi",))
    file = placement_cache.cache_file(libc)
    file.write_text('{"free rdi": [2, "planted"]}')
    assert placement_cache.placement_for(libc, "free", ("rdi",)) == right
    assert len(computations) == 1  # decided again, not taken from the file
    assert json.loads(file.read_text())["free rdi"] == [right.offset, right.reason]


def test_a_cached_offset_is_checked_against_the_bytes_as_they_are_now(libc, computations):
    right = placement_cache.placement_for(libc, "free", ("rdi",))
    assert right.offset > 0, right  # glibc's free: moved to the emulated je
    found = code_index.function_code(libc, "free")
    assert placement.confirmed(right.offset, found[1], found[0], ("rdi",))
    assert not placement.confirmed(right.offset + 1, found[1], found[0], ("rdi",))
    assert placement.confirmed(0, found[1], found[0], ("rdi",))  # the entry always holds


def test_a_cache_file_others_can_write_is_refused(libc, computations, capsys):
    file = placement_cache.cache_file(libc)
    file.write_text('{"free rdi": [0, "planted"]}')
    os.chmod(file, 0o666)
    decided = placement_cache.placement_for(libc, "free", ("rdi",))
    assert decided == place_probe(libc, "free", ("rdi",)) and len(computations) == 1
    assert "writable by other users" in capsys.readouterr().err


def test_a_cache_directory_others_can_write_is_not_used(libc, computations, capsys):
    placement_dir = placement_cache.cache_file(libc).parent
    os.chmod(placement_dir, 0o777)
    assert placement_cache.cache_file(libc) is None
    placement_cache.placement_for(libc, "free", ("rdi",))
    assert not any(placement_dir.iterdir())
    err = capsys.readouterr().err
    assert err.count("leaktrace: warning:") == 1 and "running without the cache" in err
