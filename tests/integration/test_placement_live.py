"""A uprobe at the offset leaktrace.probes.placement chooses fires exactly once per call.

A program frees N known blocks and calls free(NULL) a few times; a bcc uprobe
at the chosen offset of free counts calls per rdi value, and a uretprobe at the
same offset counts returns. Both must see exactly those calls, with the right
pointers: the moved probe is the same probe as one at the entry.
"""
from __future__ import annotations

import glob
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from leaktrace.probes.code_index import index_elf
from leaktrace.probes.placement import place_probe

DATA = Path(__file__).resolve().parent.parent / "data" / "placement"
BLOCKS = 200
NULL_FREES = 7

BPF_TEXT = """
#include <uapi/linux/ptrace.h>
BPF_HASH(calls, u64, u64, 4096);
BPF_ARRAY(returns, u64, 1);

int on_free(struct pt_regs *ctx) {
    u64 ptr = PT_REGS_PARM1(ctx);
    calls.increment(ptr);
    return 0;
}

int on_return(struct pt_regs *ctx) {
    int zero = 0;
    returns.increment(zero);
    return 0;
}
"""

ALLOCATORS = {
    "glibc": ((), "libc.so.6"),
    "jemalloc": (("-ljemalloc",), "libjemalloc.so.2"),
}


@pytest.fixture(scope="module")
def kernel_source():
    """BCC_KERNEL_SOURCE pointing at Debian's split headers merged into one tree."""
    own_build = f"/lib/modules/{os.uname().release}/build"
    if os.environ.get("BCC_KERNEL_SOURCE") or os.path.isdir(own_build):
        yield
        return
    arch = sorted(glob.glob("/usr/src/linux-headers-*-amd64"))
    if not arch:
        pytest.fail("no kernel headers in /usr/src: run scripts/setup.sh")
    common = arch[-1][: -len("amd64")] + "common"
    with tempfile.TemporaryDirectory(prefix="leaktrace-headers-") as tree:
        for part in (common, arch[-1]):
            subprocess.run(["cp", "-as", "--remove-destination", f"{part}/.", tree], check=True)
        os.environ["BCC_KERNEL_SOURCE"] = tree
        try:
            yield
        finally:
            del os.environ["BCC_KERNEL_SOURCE"]


@pytest.fixture(scope="module")
def tracefs():
    if not os.path.exists("/sys/kernel/tracing/events"):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing"], check=True)


def _library_path(program: Path, soname: str) -> str:
    done = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        if line.strip().startswith(soname):
            return os.path.realpath(line.split("=>")[1].split("(")[0].strip())
    pytest.fail(f"{program} does not load {soname}")


def _start(program: Path):
    proc = subprocess.Popen([str(program), str(BLOCKS), str(NULL_FREES)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pointers = []
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc, pointers
        pointers.append(int(line.split()[1], 16))
    pytest.fail(f"{program} exited before it was ready")


@pytest.mark.privileged
@pytest.mark.parametrize("allocator", sorted(ALLOCATORS))
def test_moved_free_probe_fires_once_per_call_with_the_right_pointer(
        allocator, tmp_path, kernel_source, tracefs):
    from bcc import BPF

    flags, soname = ALLOCATORS[allocator]
    program = tmp_path / f"free_calls_{allocator}"
    subprocess.run(["gcc", "-O0", "-o", str(program), str(DATA / "free_calls.c"), *flags],
                   check=True)
    library = _library_path(program, soname)
    placement = place_probe(library, "free", ("rdi",))
    assert placement.offset > 0, f"nothing to test: free's entry kept ({placement.reason})"
    vaddr = index_elf(library).functions["free"][0]

    proc, pointers = _start(program)
    try:
        bpf = BPF(text=BPF_TEXT)
        bpf.attach_uprobe(name=library, sym="free", sym_off=placement.offset,
                          fn_name="on_free", pid=proc.pid)
        bpf.attach_uretprobe(name=library, addr=vaddr + placement.offset,
                             fn_name="on_return", pid=proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "freed"
        calls = {key.value: count.value for key, count in bpf["calls"].items()}
        returns = bpf["returns"][0].value
        bpf.cleanup()
    finally:
        proc.stdin.close()
        proc.wait(10)

    assert len(pointers) == BLOCKS
    assert calls == {**{p: 1 for p in pointers}, 0: NULL_FREES}, placement.reason
    assert returns == BLOCKS + NULL_FREES
