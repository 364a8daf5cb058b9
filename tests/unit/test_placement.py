"""Where leaktrace puts entry uprobes: hand-written functions that try to break
each rule (tests/data/placement/rules.S), and the real allocators of this
machine (Debian 12: glibc 2.36, jemalloc 5.3, musl 1.2.3), checked against
objdump as an independent disassembler."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from leaktrace.probes.code_index import index_elf
from leaktrace.base.errors import TargetError, UsageError
from leaktrace.probes.placement import (
    EMULATED, choose_offset, describe_kernel, emulation_kind, kernel_version, place_probe, usable_kinds,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "placement"
GLIBC = "/lib/x86_64-linux-gnu/libc.so.6"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MUSL = "/lib/x86_64-linux-musl/libc.so"
NOW, NO_NOP_EMULATION, NO_PUSH_EMULATION, NO_EMULATION = (6, 18), (6, 1), (4, 14), (3, 10)
NOP5_EMULATED = (6, 17)  # emulated as a nop, not yet optimised into a call
MMAP_ARGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    out = tmp_path_factory.mktemp("placement") / "rules.so"
    subprocess.run(["gcc", "-shared", "-nostdlib", "-o", str(out), str(DATA / "rules.S")],
                   check=True)
    return str(out)


@pytest.mark.parametrize("function, kernel, offset, reason", [
    ("free_like", NOW, 3, "to `je"),
    ("free_like", NO_EMULATION, 0, "`je 0x"),
    ("loop_into_prologue", NOW, 0, "branches to +3"),
    ("jump_into_skipped", NOW, 0, "branches to +5"),
    ("loop_to_entry", NOW, 3, "to `je"),
    ("writes_rdi", NOW, 0, "writes rdi"),
    ("writes_edi", NOW, 0, "writes edi"),
    ("writes_rax", NOW, 6, "moved past `mov rax, rdi; test rax, rax`"),
    ("writes_memory", NOW, 0, "writes memory"),
    ("atomic_first", NOW, 0, "is atomic"),
    ("changes_rsp", NOW, 0, "writes rsp"),
    ("push_first", NOW, 0, "entry `push rbp` is emulated"),
    ("push_first", NO_PUSH_EMULATION, 0, "writes rsp"),
    ("call_first", NOW, 0, "entry `call"),
    ("call_first", NO_EMULATION, 0, "changes control flow"),
    ("indirect_jump", NOW, 0, "may jump anywhere"),
    ("endbr_nop5", NOP5_EMULATED, 4, "nop5"),
    ("endbr_nop5", NOW, 9, "to `push rbx`"),  # 6.18 optimises nop5: the red zone
    ("endbr_nop5", NO_NOP_EMULATION, 9, "to `push rbx`"),
    ("endbr_nop5", NO_PUSH_EMULATION, 0, "writes rsp"),
    ("entered_far", NOW, 0, "+3 is entered from outside"),
    ("entered_near", NOW, 0, "+3 is entered from outside"),
    ("alias_inside", NOW, 0, "+3 is entered from outside"),
    ("no_size", NOW, 0, "size of no_size is unknown"),
])
def test_synthetic_function_placement(rules, function, kernel, offset, reason):
    placement = place_probe(rules, function, ("rdi",), kernel)
    assert (placement.offset, reason in placement.reason) == (offset, True), placement.reason


def test_a_register_the_probe_reads_is_never_skipped(rules):
    # writes_rax moves past `mov rax, rdi` only while the probe does not read rax.
    assert place_probe(rules, "writes_rax", ("rdi", "rax"), NOW).offset == 0


def test_choose_offset_on_raw_bytes():
    code = bytes.fromhex("4885ff" "7401" "c3" "c3")  # test rdi,rdi; je +1; ret; ret
    assert choose_offset(code, 0x1000, ("rdi",), NOW).offset == 3
    kept = choose_offset(code, 0x1000, ("rdi",), NOW, foreign_entries={0x1003})
    assert (kept.offset, kept.reason) == (0, "entry kept: +3 is entered from outside the function")
    truncated = choose_offset(code[:4], 0x1000, ("rdi",), NOW)  # the je is cut in half
    assert truncated.offset == 0 and "decoding stopped at +3" in truncated.reason


@pytest.mark.parametrize("hexbytes, kind", [
    ("e800000000", "branch"), ("e9000000ff", "branch"), ("eb05", "branch"), ("7405", "branch"),
    ("0f8400010000", "branch"), ("f2e900000000", "branch"),  # bnd jmp
    ("66e80000", None),  # callw: the kernel refuses 0x66 branches
    ("e305", None),  # jrcxz is not emulated
    ("3effe0", None),  # notrack jmp *%rax: ds prefix refused
    ("90", "nop"), ("f390", "nop"), ("6690", "nop2"), ("4190", None),  # 41 90 is xchg eax, r8d
    ("53", "push"), ("4154", "push"), ("4850", None), ("6650", None),
    ("0f1f440000", "nop5"), ("0f1f00", "nopl"), ("0f1f0400", None),
    ("662e0f1f840000000000", None),  # cs nopw: refused
    ("f30f1efa", None), ("4885ff", None), ("4889e5", None), ("f0ff07", None),
])
def test_emulation_kind(hexbytes, kind):
    assert emulation_kind(bytes.fromhex(hexbytes)) == kind


def test_every_emulated_kind_names_its_kernel_version():
    assert all(e.since >= (3, 16) and e.source for e in EMULATED.values())


@pytest.mark.parametrize("version, kinds", [
    ((5, 10), ("branch", "nop", "push")), ((6, 1), ("branch", "nop", "push")),
    ((6, 2), ("branch", "nop", "push", "nop2")),
    ((6, 17), ("branch", "nop", "push", "nop2", "nopl", "nop5")),
    ((6, 18), ("branch", "nop", "push", "nop2", "nopl")), ((7, 3), ("branch", "nop", "push", "nop2", "nopl")),
])
def test_what_placement_counts_on_per_kernel(version, kinds):
    assert usable_kinds(version) == kinds
    line = describe_kernel(version)
    assert f"Linux {version[0]}.{version[1]} emulates ({', '.join(kinds)})" in line
    assert ("never onto a nop5" in line) == (version >= (6, 18))
    assert describe_kernel((3, 10)) == "entry probes kept at function entries"


def test_kernel_version_parsing():
    assert kernel_version("6.18.44-fc-v657") == (6, 18)
    assert kernel_version("4.14.0") == (4, 14)
    assert kernel_version("unknown") == (0, 0)
    assert kernel_version() >= (3, 0)  # the running kernel, read from uname


def test_bad_input_becomes_a_leaktrace_error(rules, tmp_path):
    with pytest.raises(UsageError):
        place_probe(rules, "free_like", ("rdi", "xmm0"))
    with pytest.raises(UsageError):
        choose_offset(b"\x90", 0, ("edi",))
    with pytest.raises(TargetError, match="not_there is not defined"):
        place_probe(rules, "not_there", ("rdi",))
    with pytest.raises(TargetError, match="cannot read"):
        place_probe(str(tmp_path / "missing.so"), "free", ("rdi",))
    text = tmp_path / "text.so"
    text.write_text("not an ELF file\n")
    with pytest.raises(TargetError, match="cannot read"):
        place_probe(str(text), "free", ("rdi",))


# ---- real allocators ------------------------------------------------------------------------


def _objdump_instructions(path: str, start: int, stop: int) -> dict:
    """{address: mnemonic} from objdump, the independent opinion."""
    command = ["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
               f"--stop-address={stop:#x}", path]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = (re.match(r"\s*([0-9a-f]+):\s+(?:(?:bnd|notrack|rex\.\w+)\s+)*(\S+)", line)
             for line in done.stdout.splitlines())
    return {int(m.group(1), 16): m.group(2) for m in found if m}


def _need(path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing: run scripts/setup.sh --test")


# The decisions for this machine's builds (Debian 12). Another build may decide
# otherwise; objdump's mnemonic at the offset shows which instruction was chosen.
@pytest.mark.parametrize("library, function, arg_regs, offset, mnemonic", [
    (GLIBC, "free", ("rdi",), 3, "je"),  # past `test rdi, rdi`
    (GLIBC, "malloc", ("rdi",), 0, "push"),
    (GLIBC, "calloc", ("rdi", "rsi"), 0, "push"),
    (GLIBC, "realloc", ("rdi", "rsi"), 0, "push"),
    (GLIBC, "posix_memalign", ("rdi", "rsi", "rdx"), 7, "push"),  # past a rip-relative cmpb
    (GLIBC, "mmap", MMAP_ARGS, 10, "jne"),  # past `mov r10d, ecx; test r9d, 0xfff`
    (GLIBC, "munmap", ("rdi", "rsi"), 0, "mov"),  # only a syscall follows
    (JEMALLOC, "malloc", ("rdi",), 7, "ja"),  # past `cmp rdi, 0x1000`
    (JEMALLOC, "free", ("rdi",), 48, "jne"),  # past 9 register-only instructions
    (MUSL, "malloc", ("rdi",), 0, "jmp"),
    (MUSL, "free", ("rdi",), 0, "jmp"),
    (MUSL, "calloc", ("rdi", "rsi"), 0, "push"),
])
def test_real_allocator_placement(library, function, arg_regs, offset, mnemonic):
    _need(library)
    placement = place_probe(library, function, arg_regs, NOW)
    vaddr, size, _ = index_elf(library).functions[function]
    at = _objdump_instructions(library, vaddr, vaddr + size)
    assert placement.offset == offset, placement.reason
    assert at.get(vaddr + offset) == mnemonic, placement.reason


def test_real_allocators_on_older_kernels():
    # 4.14 does not emulate push: glibc's malloc keeps its entry (its push moves rsp).
    old_malloc = place_probe(GLIBC, "malloc", ("rdi",), NO_PUSH_EMULATION)
    assert (old_malloc.offset, "writes rsp" in old_malloc.reason) == (0, True)
    assert place_probe(GLIBC, "free", ("rdi",), NO_PUSH_EMULATION).offset == 3
    assert place_probe(GLIBC, "free", ("rdi",), NO_EMULATION).offset == 0


def test_every_eighth_glibc_function_gets_an_emulated_instruction_boundary():
    index = index_elf(GLIBC)
    functions = sorted((vaddr, size, name) for name, (vaddr, size, kind) in index.functions.items()
                       if kind == "STT_FUNC" and size)
    sample = functions[::8]
    at = _objdump_instructions(GLIBC, sample[0][0], sample[-1][0] + sample[-1][1])
    cheap = re.compile(r"^(j[a-z]+|call|push|nop[lw]?)$")
    moved = 0
    for vaddr, size, name in sample:
        placement = place_probe(GLIBC, name, MMAP_ARGS, NOW)
        mnemonic = at.get(vaddr + placement.offset)
        assert mnemonic is not None, f"{name}+{placement.offset} is not an instruction start"
        if placement.offset:
            moved += 1
            assert cheap.match(mnemonic), f"{name}: {placement.reason}"
    assert moved > len(sample) // 20  # placement is not a no-op on real code
