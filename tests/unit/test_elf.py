"""ElfSymbols on binaries the tests compile, checked against binutils; hostile files."""
import os
import random
import struct
import time

import pytest
from elftools.elf.elffile import ELFFile

from leaktrace.symbols import ElfError, demangle, open_elf
from leaktrace.symbols.elf import ElfSymbols, LoadSegment, clear_cache, runtime_to_vaddr
from symbols_programs import (
    DATA,
    build_id,
    build_shape,
    compile_program,
    nm_functions,
    strip_with_debuglink,
)


@pytest.fixture(params=["-pie", "-no-pie"])
def program(request, tmp_path):
    return compile_program(tmp_path / "leaky", "leaky.c", request.param)


def test_every_nm_function_is_found_mid_body(program):
    elf = ElfSymbols(str(program))
    functions = nm_functions(program)
    assert {"main", "leak_global", "leak_static"} <= set(functions)
    for name, (start, size) in functions.items():
        if size:
            assert elf.lookup(start + size // 2) == (name, size // 2), name


def test_address_before_any_function_is_unknown(program):
    assert ElfSymbols(str(program)).lookup(0x10) is None


def test_find_function_matches_nm(program):
    elf = ElfSymbols(str(program))
    assert elf.find_function("leak_global") == nm_functions(program)["leak_global"]
    assert elf.find_function("no_such_function") is None


def test_build_id_matches_readelf(program):
    assert ElfSymbols(str(program)).build_id == build_id(program)


def test_line_for_names_the_source_line(program):
    elf = ElfSymbols(str(program))
    start, _ = elf.find_function("leak_global")
    file, line = elf.line_for(start)
    source = (DATA / "leaky.c").read_text().splitlines()
    assert file.endswith("leaky.c")
    assert "leak_global" in source[line - 1] or "{" in source[line - 1]


def test_shared_library_symbols(tmp_path):
    _, lib = build_shape(tmp_path)
    elf = ElfSymbols(str(lib))
    start, size = nm_functions(lib)["shape_area"]
    assert elf.lookup(start + 1) == ("shape_area", 1)
    assert elf.has_debug_symbols


def test_stripped_binary_has_only_dynamic_symbols(tmp_path):
    program = compile_program(tmp_path / "leaky", "leaky.c", "-rdynamic")
    functions = nm_functions(program)
    strip_with_debuglink(program, tmp_path / "leaky.debug")
    stripped = ElfSymbols(str(program))
    assert not stripped.has_debug_symbols
    assert stripped.debuglink[0] == "leaky.debug"
    # -rdynamic exports leak_global in .dynsym; the static function is gone.
    assert stripped.find_function("leak_global") == functions["leak_global"]
    assert stripped.find_function("leak_static") is None
    debug = ElfSymbols(str(tmp_path / "leaky.debug"))
    assert debug.has_debug_symbols and debug.build_id == stripped.build_id
    start, _ = functions["leak_static"]
    assert debug.lookup(start + 2) == ("leak_static", 2)


def test_segments_and_file_offsets(program):
    elf = ElfSymbols(str(program))
    text = [s for s in elf.segments if s.executable]
    assert len(text) == 1
    seg = text[0]
    assert elf.segment_for_offset(seg.offset + 4) == seg
    assert elf.file_offset_to_vaddr(seg.offset + 4) == seg.vaddr + 4


def test_runtime_to_vaddr_pie_layout():
    # PIE: text at file offset 0x1000, vaddr 0x1000, mapped at 0x5555_0000_1000.
    segments = [LoadSegment(0, 0, 0x600, 0x600, False), LoadSegment(0x1000, 0x1000, 0x200, 0x200, True)]
    assert runtime_to_vaddr(0x555500001010, 0x555500001000, 0x1000, segments) == 0x1010


def test_runtime_to_vaddr_non_pie_is_identity():
    segments = [LoadSegment(0x400000, 0, 0x600, 0x600, False),
                LoadSegment(0x401000, 0x1000, 0x200, 0x200, True)]
    assert runtime_to_vaddr(0x401010, 0x401000, 0x1000, segments) == 0x401010


def test_runtime_to_vaddr_segment_whose_vaddr_differs_from_offset():
    # Like a data segment: p_vaddr - p_offset = 0x1000; mmap starts at the page below.
    segments = [LoadSegment(0x3DF0, 0x2DF0, 0x250, 0x260, False)]
    assert runtime_to_vaddr(0x7F0000000E00, 0x7F0000000000, 0x2000, segments) == 0x3E00
    assert runtime_to_vaddr(0x7F0000009000, 0x7F0000000000, 0x2000, segments) is None


def test_demangles_a_real_cxx_method(tmp_path):
    program = compile_program(tmp_path / "cache", "cache.cpp")
    mangled = [n for n in nm_functions(program) if "Cache" in n and "insert" in n]
    assert len(mangled) == 1 and mangled[0].startswith("_Z")
    assert demangle(mangled[0]) == "Cache::insert(std::string const&)"
    assert demangle("leak_global") == "leak_global"
    assert demangle("_Z_not_really") == "_Z_not_really"


def test_open_elf_parses_each_file_once_and_rereads_a_rebuilt_one(tmp_path):
    clear_cache()
    program = compile_program(tmp_path / "leaky", "leaky.c")
    first = open_elf(str(program))
    assert open_elf(str(program)) is first
    os.rename(program, tmp_path / "old")  # keep the old inode alive, build a new file
    compile_program(program, "leaky.c", "-DREBUILT")
    assert open_elf(str(program)) is not first


# Hostile and broken files: ElfError, quickly, and nothing else.

def assert_rejected_fast(path):
    began = time.monotonic()
    with pytest.raises(ElfError):
        open_elf(str(path))
    assert time.monotonic() - began < 2


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage"
    path.write_bytes(random.Random(1).randbytes(100_000))
    assert_rejected_fast(path)


def test_empty_file_and_directory(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert_rejected_fast(tmp_path / "empty")
    assert_rejected_fast(tmp_path)


def test_truncated_elf(program, tmp_path):
    data = program.read_bytes()
    for length in (20, 64, 300, len(data) // 2):
        path = tmp_path / f"truncated{length}"
        path.write_bytes(data[:length])
        assert_rejected_fast(path)


def test_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert_rejected_fast(tmp_path / "fifo")


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert_rejected_fast(tmp_path / "a")


def patched(program, tmp_path, name, edit):
    """A copy of `program` with one header field rewritten by edit(data, elffile)."""
    data = bytearray(program.read_bytes())
    with open(program, "rb") as stream:
        edit(data, ELFFile(stream))
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def symtab_header_offset(elf):
    index = next(i for i, s in enumerate(elf.iter_sections()) if s["sh_type"] == "SHT_SYMTAB")
    return elf["e_shoff"] + index * elf["e_shentsize"]


def test_huge_section_count(program, tmp_path):
    path = patched(program, tmp_path, "shnum", lambda d, e: struct.pack_into("<H", d, 60, 0xFFFF))
    assert_rejected_fast(path)


def test_symbol_table_with_zero_entry_size(program, tmp_path):
    edit = lambda d, e: struct.pack_into("<Q", d, symtab_header_offset(e) + 56, 0)  # noqa: E731
    assert_rejected_fast(patched(program, tmp_path, "entsize", edit))


def test_symbol_table_larger_than_the_file(program, tmp_path):
    edit = lambda d, e: struct.pack_into("<Q", d, symtab_header_offset(e) + 32, 1 << 40)  # noqa: E731
    assert_rejected_fast(patched(program, tmp_path, "symsize", edit))


def test_random_corruption_never_escapes_as_another_exception(program, tmp_path):
    clean = program.read_bytes()
    rng = random.Random(7)
    began = time.monotonic()
    for round_ in range(150):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(0, 4096)] = rng.randrange(256)  # headers live up front
        path = tmp_path / f"mutant{round_}"
        path.write_bytes(bytes(data))
        try:
            elf = ElfSymbols(str(path))
        except ElfError:
            continue
        elf.lookup(0x1139)
        elf.line_for(0x1139)
        elf.close()
    assert time.monotonic() - began < 60


@pytest.mark.parametrize("mangled, readable", [
    ("_ZN5Cache6insertERKSs", "Cache::insert(std::string const&)"),  # the pre-C++11 ABI
    ("_Z3logRKNSt7__cxx1112basic_stringIwSt11char_traitsIwESaIwEEE", "log(std::wstring const&)"),
    ("_ZNSt6vectorINSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEESaIS5_EE9push_backERKS5_",
     "std::vector<std::string, std::allocator<std::string> >::push_back(std::string const&)"),
    ("_ZN3Box3putENSt7__cxx1112basic_stringIcSt11char_traitsIcE7MyAllocIcEEE",  # not the typedef
     "Box::put(std::__cxx11::basic_string<char, std::char_traits<char>, MyAlloc<char> >)"),
])
def test_demangled_strings_read_as_their_typedefs(mangled, readable):
    assert demangle(mangled) == readable
