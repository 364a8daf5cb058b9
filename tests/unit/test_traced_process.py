"""TracedProcess: a traced process is read once and shared by the probes, the
unwinder and the symbolizer (real child processes; no root needed)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from leaktrace.process import containers, traced_process
from leaktrace.base.errors import TargetError
from leaktrace.base.model import Container
from leaktrace.probes import allocator
from leaktrace.symbols import ProcessSymbols
from leaktrace.process.traced_process import TracedProcess

# Waits for a line, maps the file named in argv[1], says so, waits again.
MAPS_ON_REQUEST = """
import mmap, sys
data = open(sys.argv[1], "rb")
print("ready", flush=True)
sys.stdin.readline()
mapped = mmap.mmap(data.fileno(), 0, prot=mmap.PROT_READ)
print("mapped", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def child(tmp_path):
    data = tmp_path / "mapped.bin"
    data.write_bytes(b"x" * 8192)
    proc = subprocess.Popen([sys.executable, "-c", MAPS_ON_REQUEST, str(data)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    yield proc, str(data)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def ask(proc, expected: str) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == expected + "\n"


@pytest.fixture
def counted(monkeypatch):
    """How often the maps were read and parsed; one read window for the whole test."""
    calls = {"read": 0, "parse": 0}
    read, parse = traced_process.read_maps_text, traced_process.parse_maps

    def counting_read(pid):
        calls["read"] += 1
        return read(pid)

    def counting_parse(text):
        calls["parse"] += 1
        return parse(text)

    monkeypatch.setattr(traced_process, "read_maps_text", counting_read)
    monkeypatch.setattr(traced_process, "parse_maps", counting_parse)
    monkeypatch.setattr(traced_process, "REREAD_S", 3600.0)
    return calls


def test_maps_are_parsed_again_only_when_they_changed(child, counted):
    proc, data = child
    process = TracedProcess(proc.pid)
    first = process.maps()
    assert data not in {entry.path for entry in first}
    version = process.version
    assert process.maps(fresh=True) == first  # read again, same text: not parsed again
    assert (counted, process.version) == ({"read": 2, "parse": 1}, version)
    ask(proc, "mapped")
    assert data in {entry.path for entry in process.maps(fresh=True)}
    assert (counted, process.version) == ({"read": 3, "parse": 2}, version + 1)


def test_the_allocator_and_the_symbolizer_share_one_read(child, counted):
    proc, _ = child
    process = TracedProcess(proc.pid)
    process.plan = allocator.discover(process)
    ProcessSymbols(process).prime()
    assert counted == {"read": 1, "parse": 1}
    assert process.plan.allocator_name == "glibc"


def test_a_process_that_exited_is_not_read_and_its_root_stays_pinned(child):
    proc, _ = child
    process = TracedProcess(proc.pid)
    assert process.root.startswith("/proc/self/fd/")
    assert os.path.samefile(process.root, f"/proc/{proc.pid}/root")
    assert process.alive()
    proc.kill()
    proc.wait(timeout=10)
    assert not process.alive()
    with pytest.raises(TargetError):
        process.maps(fresh=True)
    assert os.listdir(process.root)  # the root it had, though /proc/PID is gone


def test_the_container_is_looked_up_once_and_docker_asked_once(monkeypatch):
    asked = {"proc": 0, "docker": 0}
    found = Container("docker", "a" * 64)

    def container_of(pid, ask_docker=True):
        assert not ask_docker
        asked["proc"] += 1
        return found

    def with_docker_names(container):
        asked["docker"] += 1
        return Container(container.runtime, container.id, name="web", image="leaky:1")

    monkeypatch.setattr(containers, "container_of", container_of)
    monkeypatch.setattr(containers, "with_docker_names", with_docker_names)
    process = TracedProcess(os.getpid())
    assert process.container() is process.container() is found
    assert process.named_container().name == process.named_container().name == "web"
    assert asked == {"proc": 1, "docker": 1}
