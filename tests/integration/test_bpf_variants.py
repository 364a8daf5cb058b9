"""Every compile-time variant of the BPF programs loads here (root + BPF).

Most runs compile one variant: task storage for per-thread call state, CFI
unwinding, no event stream, kernel mode without filters. The others are
fallbacks that only some kernels or options reach (PENDING_HASH=1 on kernels
before 5.11 or where task storage does not load, UNWIND_CFI=0 with --unwind
fp, TRACE_EVENTS=1 with --trace, FOLLOW_FORKS=1 with --follow-forks, kernel
mode's filters and FULL_STACKS=1), so
a change that breaks one would go unseen until that kernel or option meets
it. Each variant is compiled through the probe classes (the -D flags as a run
sets them: options and the allocator table) and every program in it is
handed to this kernel's verifier: the user probes' handlers for every row of
the allocator table, and the kernel probe's handlers as bcc attaches them.

Time: one bcc compile per variant, about 5-20 s each on a loaded machine.
"""
import os
import struct

import pytest

from leaktrace.base.config import ProbeConfig
from leaktrace.probes.alloc_functions import HANDLERS
from leaktrace.probes.exceptions import RESTORER
from leaktrace.probes.kernel import KernelFilters, KernelProbe
from leaktrace.probes.user import UserProbe

pytestmark = [pytest.mark.privileged,
              # bcc warns about str map names when driven in-process
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def has_map(bpf, name: str) -> bool:
    try:
        bpf[name.encode()]
    except KeyError:
        return False
    return True


USER_VARIANTS = {
    "pending-hash": (ProbeConfig(pending_hash=True), {"pending": True, "unwind_rows": True, "events": False}),
    "fp-trace": (ProbeConfig(unwind="fp", trace=True), {"pending": False, "unwind_rows": False, "events": True}),
    "pending-hash-fp-trace": (ProbeConfig(pending_hash=True, unwind="fp", trace=True),
                              {"pending": True, "unwind_rows": False, "events": True}),
    # --follow-forks as kernels before 5.11 run it (its fork and exit tracepoints load with it)
    "pending-hash-follow-forks": (ProbeConfig(pending_hash=True, follow_forks=True),
                                  {"pending": True, "unwind_rows": True, "events": False}),
}


@pytest.mark.parametrize("variant", USER_VARIANTS)
def test_user_variant_loads_every_handler(variant, capfd):
    config, maps = USER_VARIANTS[variant]
    probe = UserProbe(config)
    probe.load(links=False)  # the recorder is verified here
    try:
        assert {name: has_map(probe.bpf, name) for name in maps} == maps, "not the variant asked for"
        handlers = [h for pair in HANDLERS.values() for h in pair if h]
        for handler in handlers:
            try:
                program = probe.bpf.load_func(handler.encode(), probe.bpf.KPROBE,
                                              attach_type=probe.hooks.attach_type)
            except Exception:
                # A kernel in lockdown refuses bpf_probe_write_user, and only that
                # (probes/exceptions.py leaves the throwing new alone there).
                assert handler == RESTORER, handler
                assert "bpf_probe_write_user" in capfd.readouterr().err
                continue
            assert program.fd >= 0, handler
    finally:
        probe.close()


@pytest.mark.parametrize("variant", USER_VARIANTS)
def test_user_handlers_use_only_the_atomic_add_every_kernel_takes(variant):
    # Kernels before 5.12 know one atomic instruction, add (BPF_XADD); clang
    # turns an add of a constant 0 into an atomic or, which they refuse.
    probe = UserProbe(USER_VARIANTS[variant][0])
    probe.load(links=False)
    try:
        for handler in [h for pair in HANDLERS.values() for h in pair if h] + ["recorder"]:
            code = probe.bpf.dump_func(handler.encode())
            for at in range(0, len(code), 8):
                opcode, _, _, imm = struct.unpack("<BBhi", code[at:at + 8])
                if opcode in (0xc3, 0xdb):  # BPF_STX | BPF_ATOMIC, 32 and 64 bits
                    assert imm == 0, f"{handler}: atomic op {imm:#x} at instruction {at // 8}"
    finally:
        probe.close()


def test_kernel_variant_with_every_filter_and_full_stacks_loads():
    filters = KernelFilters(pids=(os.getpid(),), comms=("leaktrace-none",), caches=("kmalloc-64",))
    probe = KernelProbe(ProbeConfig(), filters, full_stacks=True)
    defines = probe.defines()
    assert (defines["FILTER_PIDS"], defines["FILTER_COMMS"], defines["FILTER_CACHES"],
            defines["FULL_STACKS"]) == (1, 1, 1, 1)
    probe.attach()  # bcc loads and attaches every tracepoint handler
    try:
        assert has_map(probe.bpf, "wanted_pids") and has_map(probe.bpf, "wanted_caches")
    finally:
        probe.close()
