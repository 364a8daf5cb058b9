"""Which user probes are attached (one pair per address), and the --max-buckets
setting from the command line to the BPF define and the loss note. No root."""
import subprocess

from click.testing import CliRunner

from leaktrace.probes.allocator import Hook, HookPlan
from leaktrace.cli import cli
from leaktrace.commands import options
from leaktrace.base.config import ProbeConfig
from leaktrace.probes.alloc_functions import FREE_SIDE, HANDLERS, HEAP_FUNCTIONS, MMAP_FUNCTIONS
from leaktrace.probes.hooks import UprobeHooks
from leaktrace.process.traced_process import TracedProcess
from leaktrace.probes.attach_plan import distinct_entry_points, function_address
from leaktrace.probes import user
from leaktrace.probes.user import TASK_STORAGE_SINCE, UserProbe, call_state_without_task_storage
from leaktrace.probes.user_counters import loss_notes

ALIASES_C = r"""
#include <stddef.h>
void *first_fn(size_t align, size_t size) { return (void *)(align + size); }
void *second_fn(size_t align, size_t size) __attribute__((alias("first_fn")));
void *third_fn(size_t size) { return (void *)size; }
"""


def compile_aliases(tmp_path):
    src = tmp_path / "aliases.c"
    src.write_text(ALIASES_C)
    lib = tmp_path / "libaliases.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O0", str(src), "-o", str(lib)], check=True)
    return str(lib)


def kept(lib, symbols):
    """The symbols distinct_entry_points keeps of hooks on `symbols` (one row's names)."""
    hooks = [Hook("malloc", symbol, lib) for symbol in symbols]
    return [hook.symbol for hook in distinct_entry_points(lib, hooks)]


def test_an_alias_of_an_earlier_function_is_not_hooked_again(tmp_path):
    lib = compile_aliases(tmp_path)
    assert function_address(lib, "first_fn") == function_address(lib, "second_fn") is not None
    assert kept(lib, ["first_fn", "second_fn", "third_fn"]) == ["first_fn", "third_fn"]
    # The first name in the order given is the one kept.
    assert kept(lib, ["second_fn", "third_fn", "first_fn"]) == ["second_fn", "third_fn"]


def test_functions_whose_address_is_unknown_are_all_kept(tmp_path):
    lib = compile_aliases(tmp_path)
    assert function_address(lib, "no_such_fn") is None
    assert function_address(str(tmp_path / "missing.so"), "first_fn") is None
    assert kept(lib, ["no_such_fn", "first_fn", "no_such_fn"]) == ["no_such_fn", "first_fn", "no_such_fn"]


class RecordingTable(dict):
    """A BPF map as the probe fills it: key and value types, item assignment."""

    Key = int

    @staticmethod
    def Leaf():
        return "zeroed"


class RecordingBPF:
    """Stands in for bcc.BPF: records what would be attached, in order."""

    def __init__(self):
        self.entries, self.returns, self.order = [], [], []
        self.tables = {"images": RecordingTable()}

    KPROBE = 2

    def __getitem__(self, name):
        return self.tables[name]

    def load_func(self, name, prog_type, attach_type=-1):
        """Loads (a kernel that lets an exception leave a probed new: exceptions.py)."""
        return name

    def attach_uprobe(self, name, sym, fn_name, pid, sym_off):
        self.entries.append((sym.decode(), fn_name.decode()))
        self.order.append(fn_name.decode())

    def attach_uretprobe(self, name, sym, fn_name, pid):
        self.returns.append((sym.decode(), fn_name.decode()))
        self.order.append(fn_name.decode())


class RecordingHooks(UprobeHooks):
    """UprobeHooks whose probes the stand-in records instead of the kernel making them."""

    def attach(self, path, symbol, handler, pid, offset=0, retprobe=False, every_process=False):
        if retprobe:
            self.bpf.attach_uretprobe(name=path, sym=symbol, fn_name=handler, pid=pid)
        else:
            self.bpf.attach_uprobe(name=path, sym=symbol, fn_name=handler, pid=pid, sym_off=offset)


def attach_plan(hooks, addresses):
    probe = UserProbe(ProbeConfig(unwind="fp"), placements=lambda hook: 0,
                      addresses=lambda path, symbol: addresses[symbol])
    probe.bpf = RecordingBPF()
    probe.hooks = RecordingHooks(probe.bpf, links=False)
    plan = HookPlan(pid=42, allocator_path=hooks[0].path, allocator_name="test", hooks=tuple(hooks))
    process = TracedProcess(42)
    process.plan = plan
    probe.attach(process)
    return probe


def attach_glibc_plan(functions, addresses):
    return attach_plan([Hook(fn, fn, "/libc.so.6") for fn in functions], addresses)


def test_return_probes_then_the_free_side_then_entries_are_attached():
    # A call entering between its entry and return probes would leave a mark
    # that never clears; a block allocated before free is hooked would never
    # be seen freed.
    functions = HEAP_FUNCTIONS + MMAP_FUNCTIONS
    probe = attach_glibc_plan(functions, {fn: 0x1000 + 0x100 * i for i, fn in enumerate(functions)})
    order = probe.bpf.order
    returns = [i for i, name in enumerate(order) if name.endswith("_exit")]
    entries = [i for i, name in enumerate(order) if name.endswith("_enter")]
    assert len(returns) == sum(1 for fn in functions if HANDLERS[fn][1]) and len(entries) == len(functions), order
    assert max(returns) < min(entries), order
    assert {order[i] for i in entries[:len(FREE_SIDE)]} == {f"{fn}_enter" for fn in FREE_SIDE}, order
    assert probe.bpf.tables["images"] == {42: "zeroed"}  # its execs are watched


def test_attach_hooks_memalign_and_aligned_alloc_once_when_they_share_an_address():
    functions = HEAP_FUNCTIONS + MMAP_FUNCTIONS
    # Debian's glibc: memalign and aligned_alloc are one function.
    addresses = {fn: 0x1000 + 0x100 * i for i, fn in enumerate(functions)}
    addresses["memalign"] = addresses["aligned_alloc"]
    probe = attach_glibc_plan(functions, addresses)
    hooked = [hook.function for _, hook, _ in probe.attached]
    assert hooked == [fn for fn in functions if fn != "memalign"]
    assert ("aligned_alloc", "aligned_alloc_exit") in probe.bpf.returns
    assert not any(sym == "memalign" for sym, _ in probe.bpf.entries + probe.bpf.returns)


def test_each_symbol_of_a_row_gets_its_own_probes_running_the_rows_handlers():
    # One row, several names (operator new and new[] in one allocator): each
    # name the object defines is probed, with the row's handlers.
    hooks = [Hook("malloc", "malloc", "/liballoc.so"), Hook("malloc", "other_malloc", "/liballoc.so"),
             Hook("free", "free", "/liballoc.so")]
    probe = attach_plan(hooks, {"malloc": 0x100, "other_malloc": 0x200, "free": 0x300})
    assert sorted(probe.bpf.returns) == [("malloc", "malloc_exit"), ("other_malloc", "malloc_exit")]
    assert sorted(probe.bpf.entries) == [("free", "free_enter"), ("malloc", "malloc_enter"),
                                         ("other_malloc", "malloc_enter")]
    assert [hook.symbol for _, hook, _ in probe.attached] == ["malloc", "other_malloc", "free"]


def test_max_buckets_reaches_the_bpf_define():
    opts = {"min_size": 0, "max_size": 0, "max_allocs": 1 << 20, "max_stacks": 1 << 14,
            "max_buckets": 4096}
    config = options.probe_config(opts)
    assert config.max_buckets == 4096
    assert config.defines()["MAX_BUCKETS"] == 4096


def test_max_buckets_is_an_option_of_the_tracing_commands_with_the_old_default():
    for command in ("attach", "run", "kernel"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "--max-buckets" in result.output, command
    assert ProbeConfig().max_buckets == 131072
    result = CliRunner().invoke(cli, ["attach", "-p", "1", "--max-buckets", "10"])
    assert result.exit_code != 0 and "--max-buckets" in result.output


def test_bucket_map_full_note_names_the_option_and_its_value():
    notes = loss_notes({"bucket_map_full": 7}, ProbeConfig(max_buckets=2048))
    assert len(notes) == 1
    assert notes[0].startswith("7 updates")
    assert "(--max-buckets 2048)" in notes[0] and "raise --max-buckets" in notes[0]


def test_call_state_goes_to_the_thread_id_hash_before_5_11_and_the_header_says_why():
    # Decided by version first: 5.10 (Debian 11, appliances) is never asked to load task storage.
    assert (5, 10) < TASK_STORAGE_SINCE <= (5, 11)
    assert call_state_without_task_storage((5, 10)) == (
        "per-thread call state in a thread-id hash: Linux 5.10 has no task storage for tracing programs (5.11+)")
    # A newer kernel that refuses it (built without it, a stricter verifier) says what failed.
    assert call_state_without_task_storage((6, 1), "bpf_task_storage_get: unknown func").endswith(
        "task storage did not load here (bpf_task_storage_get: unknown func)")


def test_the_first_compile_walks_32_frames_on_kernels_before_5_11(monkeypatch):
    # compile_early() compiles before load() runs: on 5.10 a 128-frame first
    # compile left the recorder refused (E2BIG) with no shallower retry.
    monkeypatch.setattr(user, "kernel_version", lambda: (5, 10))
    assert UserProbe(ProbeConfig())._first_choice()["UNWIND_MAX_DEPTH"] == user.SHALLOW_WALK
    monkeypatch.setattr(user, "kernel_version", lambda: (6, 1))
    assert UserProbe(ProbeConfig())._first_choice()["UNWIND_MAX_DEPTH"] == user.DEEP_WALK
