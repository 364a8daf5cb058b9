"""Placement decisions reused between runs (leaktrace/placement_cache.py): the
same answer as computing it, no recomputation for a file seen before, and a
fresh decision once the file changes or the cache holds garbage."""
from __future__ import annotations

import os
import shutil

import pytest

from leaktrace import placement_cache
from leaktrace.placement import place_probe

GLIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture
def libc(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
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
    file.parent.mkdir(parents=True)
    file.write_text('{"free rdi": [4096, "hostile"], "malloc rdi": "x"}')
    decided = placement_cache.placement_for(libc, "free", ("rdi",))
    assert decided == place_probe(libc, "free", ("rdi",))
    assert len(computations) == 1
    file.write_text("not json")
    assert placement_cache.placement_for(libc, "free", ("rdi",)) == decided
