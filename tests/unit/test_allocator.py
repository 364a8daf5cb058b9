"""Allocator discovery on programs the tests compile, checked against the dynamic linker.

Ground truth is the linker itself: run with LD_DEBUG=bindings, it says which
object the executable's malloc was bound to. discover() (a running process)
and discover_for_command() (`leaktrace run`) must both name that object.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from harness import compile_c
from leaktrace.probes import allocator
from leaktrace.cli import main
from leaktrace.base.errors import UsageError
from leaktrace.probes import features
from leaktrace.symbols.elf import clear_cache
from leaktrace.process.traced_process import TracedProcess
from symbols_programs import need_tool

# case -> (program, extra environment; {dir} is the build folder, object malloc must bind to)
CASES = {
    "plain_libc": ("plain", {}, "libc.so"),
    "linked_jemalloc": ("with_jemalloc", {}, "libjemalloc"),
    "preload_beats_needed_jemalloc": ("with_jemalloc", {"LD_PRELOAD": "{dir}/libfake.so"}, "libfake"),
    "preload_list_skips_a_missing_entry": (
        "with_jemalloc", {"LD_PRELOAD": "{dir}/libmissing.so:{dir}/libfake.so"}, "libfake"),
    "preload_by_soname_on_library_path": (
        "with_jemalloc", {"LD_PRELOAD": "libfake.so", "LD_LIBRARY_PATH": "{dir}"}, "libfake"),
    # libc is a direct dependency, jemalloc one level deeper: breadth-first, libc wins.
    "transitive_jemalloc_after_libc": ("via_plain_lib", {}, "libc.so"),
}


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()  # each module build makes new files; inode numbers get reused


def _compile(src: str, out_dir: Path, flags=(), name=None) -> Path:
    try:
        return compile_c(src, out_dir, flags, out_name=name)
    except AssertionError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot build {src} (scripts/setup.sh --test installs gcc and libjemalloc-dev)")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    need_tool("gcc")
    out = tmp_path_factory.mktemp("allocator")
    no_as_needed = "-Wl,--no-as-needed"  # keep DT_NEEDED even without a reference
    _compile("fake_malloc.c", out, ["-shared", "-fPIC"], name="libfake.so")
    _compile("plain_lib.c", out, ["-shared", "-fPIC", no_as_needed, "-ljemalloc"], name="libplain.so")
    _compile("calls_malloc.c", out, name="plain")
    _compile("calls_malloc.c", out, [no_as_needed, "-ljemalloc"], name="with_jemalloc")
    _compile("calls_malloc.c", out, [no_as_needed, f"-L{out}", "-lplain", f"-Wl,-rpath,{out}"],
             name="via_plain_lib")
    return out


def case_env(case: str, out: Path) -> Dict[str, str]:
    extra = {key: value.format(dir=out) for key, value in CASES[case][1].items()}
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    return {**env, **extra}


def linker_binding(program: Path, env: Dict[str, str]) -> str:
    """The object the dynamic linker binds the executable's malloc to."""
    done = subprocess.run([str(program)], input="", env={**env, "LD_DEBUG": "bindings"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(rf"binding file {re.escape(str(program))} \[0\] to (\S+) \[0\]: "
                      r"normal symbol `malloc'", done.stderr)
    assert found, f"LD_DEBUG shows no malloc binding for {program}:\n{done.stderr[-2000:]}"
    return found.group(1)


def expected_binding(case: str, built: Path) -> str:
    program, _, kind = CASES[case]
    bound = linker_binding(built / program, case_env(case, built))
    # The scenario is the one the case names (the linker, not leaktrace, decides).
    assert os.path.basename(bound).startswith(kind), f"{case}: the linker bound malloc to {bound}"
    return bound


def start(program: Path, env: Dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen([str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env=env, text=True)
    line = process.stdout.readline()
    assert line.startswith("ready"), f"{program} did not start: {line!r}"
    return process


def stop(process: subprocess.Popen) -> None:
    process.stdin.close()
    process.wait(timeout=10)


@pytest.mark.parametrize("case", sorted(CASES))
def test_running_process_hooks_the_object_the_linker_bound(case, built):
    bound = expected_binding(case, built)
    process = start(built / CASES[case][0], case_env(case, built))
    try:
        plan = allocator.discover(TracedProcess(process.pid))
        assert os.path.samefile(plan.allocator_path, bound), (case, plan)
        # host paths go through /proc/PID/root: compare while the process lives
        assert os.path.samefile(plan.provider("malloc"), bound), plan.hooks
    finally:
        stop(process)


@pytest.mark.parametrize("case", sorted(CASES))
def test_command_hooks_the_object_the_linker_will_bind(case, built):
    bound = expected_binding(case, built)
    plan = allocator.discover_for_command(str(built / CASES[case][0]), case_env(case, built))
    assert os.path.samefile(plan.allocator_path, bound), (case, plan)


def test_mmap_still_comes_from_libc_when_a_preload_provides_malloc(built):
    env = case_env("preload_beats_needed_jemalloc", built)
    plan = allocator.discover_for_command(str(built / "with_jemalloc"), env)
    assert os.path.basename(plan.provider("malloc")) == "libfake.so", plan.hooks
    assert "libc.so" in os.path.basename(plan.provider("mmap")), plan.hooks


def graph_order(graph: Dict[str, List[str]], preload: List[str]) -> List[str]:
    return allocator.search_order("exe", preload, lambda name: graph.get(name, ()),
                                  lambda name, loader: name if name in graph else None)


def test_search_order_is_executable_then_preloads_then_needed_breadth_first():
    graph = {"exe": ["liba", "libc"], "liba": ["libjemalloc", "libc"], "libp": ["libx"],
             "libc": ["ld"], "libjemalloc": ["libc"], "libx": [], "ld": []}
    assert graph_order(graph, ["libp"]) == ["exe", "libp", "liba", "libc", "libx", "libjemalloc", "ld"]


def test_search_order_skips_what_the_linker_cannot_load_and_survives_cycles():
    graph = {"exe": ["liba", "libgone"], "liba": ["exe", "liba"]}
    assert graph_order(graph, ["libmissing", "liba"]) == ["exe", "liba"]


# ---- --obj -----------------------------------------------------------------------------------


def test_obj_without_malloc_is_refused_by_attach_and_run_alike(built):
    lib = str(built / "libplain.so")
    with pytest.raises(UsageError) as from_run:
        allocator.discover_for_command(str(built / "plain"), case_env("plain_libc", built), obj=lib)
    process = start(built / "plain", case_env("plain_libc", built))
    try:
        with pytest.raises(UsageError) as from_attach:
            allocator.discover(TracedProcess(process.pid), obj=lib)
    finally:
        stop(process)
    assert "does not define malloc" in from_run.value.message
    assert (from_run.value.message, from_run.value.hint) == (from_attach.value.message, from_attach.value.hint)


def test_obj_that_defines_malloc_is_hooked_by_run(built):
    lib = str(built / "libfake.so")
    plan = allocator.discover_for_command(str(built / "plain"), case_env("plain_libc", built), obj=lib)
    assert plan.allocator_path == lib
    assert plan.provider("malloc") == lib


def test_run_and_attach_print_the_same_line_for_an_obj_without_malloc(built, tmp_path, capsys, monkeypatch):
    """The CLI path up to the check; privileges are what this test does not need."""
    monkeypatch.setattr(features, "check_privileges", lambda: None)
    lib = str(built / "libplain.so")
    marker = tmp_path / "ran"
    assert main(["run", "--obj", lib, "--", "touch", str(marker)]) == UsageError.exit_code
    run_err = capsys.readouterr().err
    assert not marker.exists(), "the command ran although --obj was refused"
    process = start(built / "plain", case_env("plain_libc", built))
    try:
        assert main(["attach", "-p", str(process.pid), "--obj", lib]) == UsageError.exit_code
    finally:
        stop(process)
    attach_err = capsys.readouterr().err
    assert run_err == attach_err, (run_err, attach_err)
    assert len(run_err.splitlines()) == 1 and "does not define malloc" in run_err, run_err


def test_a_row_with_several_symbols_hooks_each_one_the_allocator_defines(built, monkeypatch):
    # libfake defines malloc, calloc and realloc: a row naming two of them and
    # one it lacks is hooked at exactly the two, with that row's function.
    from leaktrace.probes.alloc_functions import AllocFunction
    row = AllocFunction("malloc", "alloc", "heap", "pointer", size=0, symbols=("malloc", "nowhere", "calloc"))
    monkeypatch.setattr(allocator, "FUNCTIONS", (row,))
    lib = str(built / "libfake.so")
    plan = allocator.discover_for_command(str(built / "plain"), case_env("plain_libc", built), obj=lib)
    assert [(h.function, h.symbol, h.path) for h in plan.hooks] == [("malloc", "malloc", lib), ("malloc", "calloc", lib)]
    assert plan.objects() == {lib: list(plan.hooks)}


def test_obj_accepts_a_prefixed_jemalloc_and_hooks_its_je_names(tmp_path, built):
    # A jemalloc built with --with-jemalloc-prefix=je_ defines je_malloc, not malloc.
    src = tmp_path / "prefixed.c"
    src.write_text("#include <stddef.h>\n"
                   "void *je_malloc(size_t n) { return (void *)n; }\n"
                   "void je_free(void *p) { (void)p; }\n"
                   "void *je_mallocx(size_t n, int flags) { return (void *)(n + flags); }\n")
    lib = str(tmp_path / "libjemalloc_prefixed.so")
    subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", lib], check=True)
    plan = allocator.discover_for_command(str(built / "plain"), case_env("plain_libc", built), obj=lib)
    hooked = {(hook.function, hook.symbol) for hook in plan.hooks if hook.path == lib}
    assert hooked == {("malloc", "je_malloc"), ("free", "je_free"), ("mallocx", "je_mallocx")}, plan.hooks
    assert plan.allocator_name == "jemalloc"


def test_a_program_with_only_itself_and_its_loader_mapped_is_still_loading():
    needs_libc = {"/app/server": ("libc.so.6",), "/lib64/ld-linux-x86-64.so.2": ()}.get
    loader = ("/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2")
    assert allocator.still_loading([("/app/server", "/app/server"), loader], needs_libc)
    libc = ("/usr/lib/libc.so.6", "/usr/lib/libc.so.6")
    assert not allocator.still_loading([("/app/server", "/app/server"), loader, libc], needs_libc)


def test_a_static_program_or_nothing_mapped_is_not_waited_for():
    assert not allocator.still_loading([("/app/static", "/app/static")], lambda path: ())
    assert not allocator.still_loading([], lambda path: ("libc.so.6",))
