"""ProcessSymbols on live programs: names and offsets agree with nm + the live maps."""
import ctypes
import os
import shutil
import subprocess

import pytest

from leaktrace.base.model import RawStack
from leaktrace.symbols import ProcessSymbols, open_elf, read_maps
from leaktrace.symbols import elf as elf_module
from leaktrace.symbols.elf import clear_cache
from leaktrace.symbols.process import BUILD_ID_MISMATCH, NOT_THE_MAPPED_FILE
from leaktrace.process.traced_process import TracedProcess
from symbols_programs import (
    build_id,
    build_shape,
    compile_program,
    nm_functions,
    running,
    runtime_address,
    stop,
    strip_with_debuglink,
)
from test_paths import watch_opens

needs_map_files = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"),
    reason="/proc/PID/map_files needs root",
)


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()  # each test builds its own files; inode numbers get reused
    yield
    clear_cache()


def frame_at(symbols, address, caller=False):
    """Symbolize one address, as the innermost frame or as a caller's return address."""
    addresses = (0, address) if caller else (address,)
    return symbols.symbolize(RawStack(addresses))[-1]


# Code segments that start mid-page (p_offset 0x1234, mapped from offset 0x1000)
# are where a load bias that ignores the mapping's file offset goes wrong.
LAYOUTS = {
    "pie": ["-pie"],
    "no-pie": ["-no-pie"],
    "pie-unaligned-text": ["-pie", "-Wl,--section-start=.init=0x1234"],
    "no-pie-unaligned-text": ["-no-pie", "-Wl,--section-start=.init=0x401234"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("frames", ["-fno-omit-frame-pointer", "-fomit-frame-pointer"])
def test_functions_resolve_to_nm_names_and_offsets(tmp_path, layout, frames):
    program = compile_program(tmp_path / "leaky", "leaky.c", *LAYOUTS[layout], frames)
    functions = nm_functions(program)
    with running(program) as process:
        symbols = ProcessSymbols(TracedProcess(process.pid))
        for name in ("main", "leak_global", "leak_static"):
            start, size = functions[name]
            address = runtime_address(process.pid, program, start)
            frame = frame_at(symbols, address + 3)
            assert (frame.symbol, frame.offset, frame.module) == (name, 3, str(program))
            # A call that ends a function returns just past it: still that function.
            caller = frame_at(symbols, address + size, caller=True)
            assert (caller.symbol, caller.offset) == (name, size)
    assert symbols.warnings == []


def test_shared_library_function(tmp_path):
    program, lib = build_shape(tmp_path)
    start, _ = nm_functions(lib)["shape_area"]
    with running(program) as process:
        frame = frame_at(ProcessSymbols(TracedProcess(process.pid)), runtime_address(process.pid, lib, start) + 1)
    assert (frame.symbol, frame.offset, frame.module) == ("shape_area", 1, str(lib))


def test_cxx_method_is_demangled(tmp_path):
    program = compile_program(tmp_path / "cache", "cache.cpp")
    mangled = next(n for n in nm_functions(program) if "Cache" in n and "insert" in n)
    start, _ = nm_functions(program)[mangled]
    with running(program) as process:
        frame = frame_at(ProcessSymbols(TracedProcess(process.pid)), runtime_address(process.pid, program, start))
    assert frame.symbol.startswith("Cache::insert(std::") and frame.symbol.endswith(" const&)")
    assert frame.label().startswith("Cache::insert(") and frame.label().endswith("+0x0 [cache]")


def test_lines_option_adds_file_and_line(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    with running(program) as process:
        address = runtime_address(process.pid, program, start)
        with_lines = frame_at(ProcessSymbols(TracedProcess(process.pid), lines=True), address)
        without = frame_at(ProcessSymbols(TracedProcess(process.pid)), address)
    assert with_lines.file.endswith("leaky.c") and with_lines.line in (13, 14)
    assert (without.file, without.line) == (None, None)


@pytest.mark.parametrize("subdir", ["", ".debug"])
def test_stripped_binary_uses_its_debuglink_file(tmp_path, subdir):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_static"]
    (tmp_path / subdir).mkdir(exist_ok=True)
    strip_with_debuglink(program, tmp_path / "leaky.debug")
    os.rename(tmp_path / "leaky.debug", tmp_path / subdir / "leaky.debug")
    assert open_elf(str(program)).find_function("leak_static") is None  # really stripped
    with running(program) as process:
        symbols = ProcessSymbols(TracedProcess(process.pid), lines=True)
        frame = frame_at(symbols, runtime_address(process.pid, program, start) + 2)
    assert (frame.symbol, frame.offset) == ("leak_static", 2)
    assert frame.file.endswith("leaky.c")  # lines come from the debug file too


def test_debuglink_with_wrong_crc_is_refused(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_static"]
    strip_with_debuglink(program, tmp_path / "leaky.debug")
    with open(tmp_path / "leaky.debug", "ab") as debug:
        debug.write(b"tampered")
    with running(program) as process:
        symbols = ProcessSymbols(TracedProcess(process.pid))
        frame = frame_at(symbols, runtime_address(process.pid, program, start) + 2)
    assert frame.symbol is None and frame.module == str(program)
    assert any("no symbols" in warning for warning in symbols.warnings)


def split_by_build_id(program, debug_root):
    """Strip `program` and file its debug info under debug_root's build-id tree."""
    ident = build_id(program)
    target = debug_root / "usr/lib/debug/.build-id" / ident[:2] / f"{ident[2:]}.debug"
    target.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(program), str(target)], check=True)
    subprocess.run(["objcopy", "--strip-all", str(program)], check=True)


def test_build_id_debug_file_is_found_inside_the_given_root(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_static"]
    split_by_build_id(program, tmp_path / "fakeroot")
    (tmp_path / "emptyroot").mkdir()
    with running(program) as process:
        address = runtime_address(process.pid, program, start) + 2
        found = frame_at(ProcessSymbols(TracedProcess(process.pid, root=str(tmp_path / "fakeroot"))), address)
        clear_cache()
        elsewhere = ProcessSymbols(TracedProcess(process.pid, root=str(tmp_path / "emptyroot")))
        missing = frame_at(elsewhere, address)
    assert (found.symbol, found.offset) == ("leak_static", 2)
    assert (missing.symbol, missing.module) == (None, str(program))
    assert missing.label().startswith("[unknown] 0x") and missing.label().endswith("[leaky]")
    assert elsewhere.warnings == [f"{program} has no symbols (stripped, no debug file found)"]


def test_symbolizes_after_the_process_exited_when_primed(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    with running(program) as process:
        symbols = ProcessSymbols(TracedProcess(process.pid))
        symbols.prime()
        address = runtime_address(process.pid, program, start)
        stop(process)
        assert not os.path.exists(f"/proc/{process.pid}")
        frame = frame_at(symbols, address + 4)
    assert (frame.symbol, frame.offset) == ("leak_global", 4)


@needs_map_files
def test_deleted_binary_is_read_through_map_files(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    with running(program) as process:
        address = runtime_address(process.pid, program, start)
        program.unlink()
        frame = frame_at(ProcessSymbols(TracedProcess(process.pid)), address + 4)
    assert (frame.symbol, frame.offset, frame.module) == ("leak_global", 4, str(program))


def test_process_gone_before_anything_was_read(tmp_path):
    process = subprocess.Popen(["true"])
    process.wait()
    symbols = ProcessSymbols(TracedProcess(process.pid))
    frames = symbols.symbolize(RawStack((0x401000, 0x7F0000001000)))
    assert [f.symbol for f in frames] == [None, None]
    assert symbols.warnings == [
        f"pid {process.pid} exited before its memory map was read; its frames show as [unknown]"]


def test_anonymous_memory_and_unmapped_addresses(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    with running(program) as process:
        heap = next(e for e in read_maps(process.pid) if e.path == "[heap]")
        symbols = ProcessSymbols(TracedProcess(process.pid))
        frames = symbols.symbolize(RawStack((heap.start + 8, 0x10), ("fp", "scan")))
    assert (frames[0].symbol, frames[0].module, frames[0].unwind) == (None, "[heap]", "fp")
    assert (frames[1].module, frames[1].unwind, frames[1].note) == (None, "scan", "outside every mapping")


def test_library_loaded_after_the_first_read_is_found(tmp_path):
    _, lib = build_shape(tmp_path)
    symbols = ProcessSymbols(TracedProcess(os.getpid()))
    frame_at(symbols, 0x10)  # first read of our own maps, before the dlopen
    shape_area = ctypes.CDLL(str(lib)).shape_area
    address = ctypes.cast(shape_area, ctypes.c_void_p).value
    frame = frame_at(symbols, address + 1)
    assert (frame.symbol, frame.offset, frame.module) == ("shape_area", 1, str(lib))


def test_build_id_note_alone_agrees_with_readelf_and_the_parser(tmp_path):
    program, lib = build_shape(tmp_path)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF\x02\x01\x01" + b"\xff" * 200)
    for path in (program, lib, garbage):
        fd = os.open(path, os.O_RDONLY)
        try:
            found = elf_module.read_build_id_note(fd)
        finally:
            os.close(fd)
        if path == garbage:
            assert found is None
        else:
            assert found == build_id(path) == open_elf(str(path)).build_id


# --- files the process did not choose to show us: identity before parsing ------------------

@pytest.fixture
def parsed(monkeypatch):
    """Inodes of the files the ELF parser reads, in order."""
    inodes = []
    real = elf_module._parse_header

    def spy(stream, size, path):
        inodes.append(os.fstat(stream.fileno()).st_ino)
        return real(stream, size, path)

    monkeypatch.setattr(elf_module, "_parse_header", spy)
    return inodes


class FakeCopier:
    """copyout.DockerCopy's interface, handing out one prepared file."""

    def __init__(self, copy, first=False):
        self.copy, self.first, self.asked = str(copy), first, []

    def binary(self, path, identity=""):
        self.asked.append(path)
        return self.copy

    def debug_file(self, binary, path):
        return None


def other_build(tmp_path):
    """leaky.c built differently: another build-id, other code at the same addresses."""
    return compile_program(tmp_path / "other", "leaky.c", "-O0")


@pytest.mark.parametrize("knows_build_id", [True, False], ids=["build-id-noted", "no-map-files"])
def test_host_file_at_the_mapped_path_is_identified_before_it_is_parsed(
        tmp_path, monkeypatch, parsed, knows_build_id):
    if knows_build_id:
        if os.geteuid() != 0 and not os.environ.get("CI"):
            pytest.skip("/proc/PID/map_files needs root")
    else:
        monkeypatch.setenv("LEAKTRACE_SIMULATE_NO_PROC_ROOT", "1")
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    with running(program) as process:
        address = runtime_address(process.pid, program, start)
        same, copied, replaced = (ProcessSymbols(TracedProcess(process.pid)) for _ in range(3))
        for symbols in (same, copied, replaced):
            frame_at(symbols, 0x10)  # reads the maps (and notes build-ids), opens no module
        stop(process)  # from here on only the host's path is left
    assert frame_at(same, address).symbol == "leak_global"
    # The same bytes in a new inode: only the build-id can prove it is the mapped file.
    clear_cache()
    os.rename(program, tmp_path / "old")
    shutil.copy(tmp_path / "old", program)
    frame = frame_at(copied, address)
    assert (frame.symbol, frame.note) == (
        ("leak_global", "") if knows_build_id else (None, NOT_THE_MAPPED_FILE))
    # Another build at that path (a canary with valid symbols): never parsed.
    clear_cache()
    os.unlink(program)
    shutil.copy(other_build(tmp_path), program)
    parsed.clear()
    with watch_opens(program) as opened:
        frame = frame_at(replaced, address)
    assert (frame.symbol, frame.module, frame.note) == (
        None, str(program), BUILD_ID_MISMATCH if knows_build_id else NOT_THE_MAPPED_FILE)
    assert os.stat(program).st_ino not in parsed
    if not knows_build_id:
        assert opened == []  # identified by stat alone: not even opened


def test_host_debuglink_next_to_the_binary_path_is_never_read(tmp_path):
    """The host search for a process in another root is the host's build-id tree only:
    dirname(path)/<debuglink> is a host path the container chose."""
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_static"]
    strip_with_debuglink(program, tmp_path / "leaky.debug")  # valid: CRC and symbols match
    (tmp_path / "emptyroot").mkdir()
    with running(program) as process:
        address = runtime_address(process.pid, program, start) + 2
        symbols = ProcessSymbols(TracedProcess(process.pid, root=str(tmp_path / "emptyroot")))
        with watch_opens(tmp_path / "leaky.debug") as opened:
            frame = frame_at(symbols, address)
    assert frame.symbol is None
    assert opened == [], "the host file the container named was read"


def test_planted_symlink_in_the_process_root_never_reaches_the_host(tmp_path, monkeypatch):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    canary = tmp_path / "canary"
    shutil.copy(program, canary)  # the mapped file's twin: reading it would name leak_global
    inside = tmp_path / "fakeroot" / str(program).lstrip("/")
    inside.parent.mkdir(parents=True)
    os.symlink(str(canary), inside)  # the container's /path/leaky -> a host path
    # A tracer without CAP_SYS_ADMIN: no map_files, only the process's root.
    monkeypatch.setattr(ProcessSymbols, "_map_file", lambda self, entry: "/nonexistent/map_files")
    with running(program) as process:
        address = runtime_address(process.pid, program, start)
        planted = ProcessSymbols(TracedProcess(process.pid, root=str(tmp_path / "fakeroot")))
        frame_at(planted, 0x10)
        os.rename(program, tmp_path / "moved")  # nor can the host's path stand in
        with watch_opens(canary) as opened:
            frame = frame_at(planted, address)
        os.unlink(inside)
        shutil.copy(canary, inside)  # control: a real file in the root is read
        control = frame_at(ProcessSymbols(TracedProcess(process.pid, root=str(tmp_path / "fakeroot"))), address)
    assert frame.symbol is None and opened == []
    assert control.symbol == "leak_global"


@needs_map_files
def test_copy_out_with_another_build_id_is_refused(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    other = other_build(tmp_path)
    assert build_id(other) != build_id(program)
    start, _ = nm_functions(program)["leak_global"]
    copier = FakeCopier(other, first=True)  # --docker-cp always: asked before /proc
    with running(program) as process:
        symbols = ProcessSymbols(TracedProcess(process.pid), copier=copier)
        frame = frame_at(symbols, runtime_address(process.pid, program, start) + 4)
    assert copier.asked == [str(program)]
    assert (frame.symbol, frame.offset, frame.note) == ("leak_global", 4, "")  # from map_files
    assert symbols.warnings == [f"pid {process.pid}: {BUILD_ID_MISMATCH}: {program} from docker cp "
                                "is not the mapped file; not used"]


@needs_map_files
def test_mismatches_in_the_root_and_the_copy_mark_the_frames(tmp_path, monkeypatch):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    other = other_build(tmp_path)
    start, _ = nm_functions(program)["leak_global"]
    root = tmp_path / "fakeroot"
    (root / str(program.parent).lstrip("/")).mkdir(parents=True)
    shutil.copy(other, root / str(program).lstrip("/"))  # the container's file: another build
    with running(program) as process:
        address = runtime_address(process.pid, program, start)
        symbols = ProcessSymbols(TracedProcess(process.pid, root=str(root)), copier=FakeCopier(other))
        frame_at(symbols, 0x10)  # maps read: the mapped build-id is noted through map_files
        monkeypatch.setattr(symbols, "_map_file", lambda entry: "/nonexistent/map_files")
        os.rename(program, tmp_path / "moved")
        frame = frame_at(symbols, address)
    assert (frame.symbol, frame.module, frame.note) == (None, str(program), BUILD_ID_MISMATCH)
    prefix = f"pid {process.pid}: {BUILD_ID_MISMATCH}: {program} from"
    assert symbols.warnings == [
        f"{prefix} {root} is not the mapped file; not used",
        f"{prefix} docker cp is not the mapped file; not used",
        f"pid {process.pid}: cannot read {program} ({BUILD_ID_MISMATCH}); its frames show as [unknown]",
    ]
