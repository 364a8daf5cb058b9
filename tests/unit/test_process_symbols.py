"""ProcessSymbols on live programs: names and offsets agree with nm + the live maps."""
import ctypes
import os
import subprocess

import pytest

from leaktrace.model import RawStack
from leaktrace.symbols import ProcessSymbols, open_elf, read_maps
from leaktrace.symbols.elf import clear_cache
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
        symbols = ProcessSymbols(process.pid)
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
        frame = frame_at(ProcessSymbols(process.pid), runtime_address(process.pid, lib, start) + 1)
    assert (frame.symbol, frame.offset, frame.module) == ("shape_area", 1, str(lib))


def test_cxx_method_is_demangled(tmp_path):
    program = compile_program(tmp_path / "cache", "cache.cpp")
    mangled = next(n for n in nm_functions(program) if "Cache" in n and "insert" in n)
    start, _ = nm_functions(program)[mangled]
    with running(program) as process:
        frame = frame_at(ProcessSymbols(process.pid), runtime_address(process.pid, program, start))
    assert frame.symbol.startswith("Cache::insert(std::") and frame.symbol.endswith(" const&)")
    assert frame.label().startswith("Cache::insert(") and frame.label().endswith("+0x0 [cache]")


def test_lines_option_adds_file_and_line(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    with running(program) as process:
        address = runtime_address(process.pid, program, start)
        with_lines = frame_at(ProcessSymbols(process.pid, lines=True), address)
        without = frame_at(ProcessSymbols(process.pid), address)
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
        symbols = ProcessSymbols(process.pid, lines=True)
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
        symbols = ProcessSymbols(process.pid)
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
        found = frame_at(ProcessSymbols(process.pid, root=str(tmp_path / "fakeroot")), address)
        clear_cache()
        elsewhere = ProcessSymbols(process.pid, root=str(tmp_path / "emptyroot"))
        missing = frame_at(elsewhere, address)
    assert (found.symbol, found.offset) == ("leak_static", 2)
    assert (missing.symbol, missing.module) == (None, str(program))
    assert missing.label().startswith("[unknown] 0x") and missing.label().endswith("[leaky]")
    assert elsewhere.warnings == [f"{program} has no symbols (stripped, no debug file found)"]


def test_symbolizes_after_the_process_exited_when_primed(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    with running(program) as process:
        symbols = ProcessSymbols(process.pid)
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
        frame = frame_at(ProcessSymbols(process.pid), address + 4)
    assert (frame.symbol, frame.offset, frame.module) == ("leak_global", 4, str(program))


def test_host_copy_is_used_only_when_it_is_the_mapped_file(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    start, _ = nm_functions(program)["leak_global"]
    with running(program) as process:
        address = runtime_address(process.pid, program, start)
        same, replaced = ProcessSymbols(process.pid), ProcessSymbols(process.pid)
        for symbols in (same, replaced):
            frame_at(symbols, 0x10)  # reads the maps, opens no module
        stop(process)
    assert frame_at(same, address).symbol == "leak_global"
    clear_cache()
    os.rename(program, tmp_path / "old")
    compile_program(program, "leaky.c", "-DREBUILT")  # same path, another file
    frame = frame_at(replaced, address)
    assert (frame.symbol, frame.module, frame.note) == (
        None, str(program), "host file is not the mapped one")


def test_process_gone_before_anything_was_read(tmp_path):
    process = subprocess.Popen(["true"])
    process.wait()
    symbols = ProcessSymbols(process.pid)
    frames = symbols.symbolize(RawStack((0x401000, 0x7F0000001000)))
    assert [f.symbol for f in frames] == [None, None]
    assert symbols.warnings == [
        f"pid {process.pid} exited before its memory map was read; its frames show as [unknown]"]


def test_anonymous_memory_and_unmapped_addresses(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c")
    with running(program) as process:
        heap = next(e for e in read_maps(process.pid) if e.path == "[heap]")
        frames = ProcessSymbols(process.pid).symbolize(RawStack((heap.start + 8, 0x10), ("fp", "scan")))
    assert (frames[0].symbol, frames[0].module, frames[0].unwind) == (None, "[heap]", "fp")
    assert (frames[1].module, frames[1].unwind, frames[1].note) == (None, "scan", "outside every mapping")


def test_library_loaded_after_the_first_read_is_found(tmp_path):
    _, lib = build_shape(tmp_path)
    symbols = ProcessSymbols(os.getpid())
    frame_at(symbols, 0x10)  # first read of our own maps, before the dlopen
    shape_area = ctypes.CDLL(str(lib)).shape_area
    address = ctypes.cast(shape_area, ctypes.c_void_p).value
    frame = frame_at(symbols, address + 1)
    assert (frame.symbol, frame.offset, frame.module) == ("shape_area", 1, str(lib))
