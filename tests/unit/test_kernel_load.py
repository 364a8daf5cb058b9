"""How kernel mode loads its program: a verifier refusal of the path reader
falls back to walking every stack, with a note; other failures stay errors.
The loader is a recording function: what it is handed is what source.load
would compile (the real refusal is exercised by the kernel matrix on 5.10/6.1)."""
from __future__ import annotations

import pytest

from leaktrace.base.errors import ProbeLoadError
from leaktrace.probes.kernel import SOURCE, load_program

REFUSED = ProbeLoadError("could not load kernel_alloc.c: Failed to load BPF program "
                         "b'raw_tracepoint__kmem_cache_alloc': Invalid argument")
NOT_COMPILED = ProbeLoadError("could not load kernel_alloc.c: Failed to compile BPF module <text>")


class Loader:
    """Refuses the programs named in `refuse` (by their FULL_STACKS value)."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.calls = []

    def __call__(self, name, defines):
        self.calls.append((name, dict(defines)))
        error = self.refuse.get(defines.get("FULL_STACKS", 0))
        if error:
            raise error
        return f"bpf with FULL_STACKS={defines.get('FULL_STACKS', 0)}"


def test_accepted_program_loads_once_without_notes():
    loader = Loader({})
    assert load_program(loader, {"FULL_STACKS": 0, "MAX_PATHS": 7}) == ("bpf with FULL_STACKS=0", ())
    assert loader.calls == [(SOURCE, {"FULL_STACKS": 0, "MAX_PATHS": 7})]


def test_refused_path_reader_falls_back_to_full_stacks_and_says_so():
    loader = Loader({0: REFUSED})
    bpf, notes = load_program(loader, {"FULL_STACKS": 0, "MAX_PATHS": 7})
    assert bpf == "bpf with FULL_STACKS=1"
    assert [d for _, d in loader.calls] == [{"FULL_STACKS": 0, "MAX_PATHS": 7},
                                            {"FULL_STACKS": 1, "MAX_PATHS": 7}]
    assert len(notes) == 1 and "--full-stacks" in notes[0] and "raw_tracepoint__kmem_cache_alloc" in notes[0]


def test_refusal_with_full_stacks_asked_is_an_error():
    loader = Loader({1: REFUSED})
    with pytest.raises(ProbeLoadError) as raised:
        load_program(loader, {"FULL_STACKS": 1})
    assert raised.value is REFUSED and len(loader.calls) == 1


def test_compile_error_is_not_retried():
    loader = Loader({0: NOT_COMPILED})
    with pytest.raises(ProbeLoadError) as raised:
        load_program(loader, {"FULL_STACKS": 0})
    assert raised.value is NOT_COMPILED and len(loader.calls) == 1


def test_fallback_refused_too_raises_the_second_refusal():
    second = ProbeLoadError("could not load kernel_alloc.c: Failed to load BPF program b'x': Permission denied")
    loader = Loader({0: REFUSED, 1: second})
    with pytest.raises(ProbeLoadError) as raised:
        load_program(loader, {"FULL_STACKS": 0})
    assert raised.value is second and len(loader.calls) == 2
