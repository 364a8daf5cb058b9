"""The CFI interpreter and unwind tables against binutils' own reading.

Ground truth is `readelf --debug-dump=frames-interp`: for every row it prints
(every address where a rule changes, in every FDE) the CFA rule, rbp's rule
and the return address's rule must be what leaktrace.unwind.cfi computes for
the same address. The binaries are the system's libc and libstdc++ (built
without frame pointers, as shipped) and programs compiled here with and
without frame pointers.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from elftools.dwarf.callframe import FDE
from elftools.elf.elffile import ELFFile

from leaktrace.unwind import cfi, tables
from leaktrace.unwind.cfi import RBP, RSP, Rule

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LIBSTDCXX = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
_FDE = re.compile(r"^\S+ \S+ \S+ FDE cie=\S+ pc=([0-9a-f]+)\.\.([0-9a-f]+)$")


def need(*paths: str) -> None:
    for path in paths:
        if not (Path(path).exists() or shutil.which(path)):
            pytest.skip(f"needs {path} (scripts/setup.sh --test installs it)")


def readelf_rows(path: str) -> Dict[int, List[Tuple[int, Dict[str, str]]]]:
    """FDE start -> [(address, {column: rule text})] as readelf prints them."""
    # readelf exits 1 on some distribution libraries (their .gnu_debuglink
    # target is absent) after printing the frames in full: judge by the output.
    text = subprocess.run(["readelf", "--debug-dump=frames-interp", path],
                          capture_output=True, text=True).stdout
    assert "FDE" in text, f"readelf printed no frames for {path}"
    fdes: Dict[int, List[Tuple[int, Dict[str, str]]]] = {}
    rows, columns = None, []
    for line in text.splitlines():
        match = _FDE.match(line)
        if match:
            rows = fdes.setdefault(int(match[1], 16), [])
            columns = []
        elif rows is not None and line.strip().startswith("LOC"):
            columns = line.split()[1:]
        elif rows is not None and columns and re.match(r"^[0-9a-f]{16} ", line):
            fields: List[str] = []
            for token in line.split():  # a register rule prints as "r9 (r9)": one cell
                if token.startswith("(") and fields:
                    fields[-1] += " " + token
                else:
                    fields.append(token)
            rows.append((int(fields[0], 16), dict(zip(columns, fields[1:]))))
        elif not line.strip() or "CIE" in line:
            rows, columns = (None, []) if "CIE" in line else (rows, columns)
    return fdes


# DWARF register numbers of x86-64 as readelf names them.
REGISTERS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp") + tuple(f"r{n}" for n in range(8, 16))


def as_readelf(state: cfi.State) -> Dict[str, str]:
    """Our rules in readelf's notation (rsp+8, c-16, u, exp); rules the walker
    does not follow (register, expression) are "other"."""
    cfa = "exp" if state.cfa_reg is None else f"{REGISTERS[state.cfa_reg]}+{state.cfa_off}"

    def rule(r: Rule) -> str:
        return {"offset": f"c{r.offset:+d}", "same": "u", "undefined": "u"}.get(r.kind, "other")
    return {"CFA": cfa, "rbp": rule(state.rbp), "ra": rule(state.ra)}


def same_rule(got: str, expected: str) -> bool:
    if got == "other":
        return not re.fullmatch(r"c[+-]\d+|u", expected)
    return got == expected


def our_fdes(path: str) -> Dict[int, object]:
    stream = open(path, "rb")
    entries = ELFFile(stream).get_dwarf_info(follow_links=False).EH_CFI_entries()
    return {e["initial_location"]: e for e in entries if isinstance(e, FDE)}


def state_at(rules: List[Tuple[int, cfi.State]], address: int) -> cfi.State:
    return [state for pc, state in rules if pc <= address][-1]


def compare_with_readelf(path: str) -> int:
    """Assert every readelf row; returns how many rows were compared."""
    ours = our_fdes(path)
    compared = 0
    for start, rows in readelf_rows(path).items():
        fde = ours[start]
        if cfi.is_signal_frame(fde):
            continue  # every rule is an expression; encoded as ROW_SIGNAL instead
        rules = cfi.rules_of(fde)
        for address, expected in rows:
            got = as_readelf(state_at(rules, address))
            if expected["CFA"] == "exp":
                assert got["CFA"] == "exp", (path, hex(address), got, expected)
                continue
            assert got["CFA"] == expected["CFA"], (path, hex(address), got, expected)
            assert same_rule(got["ra"], expected.get("ra", "u")), (path, hex(address), got, expected)
            assert same_rule(got["rbp"], expected.get("rbp", "u")), (path, hex(address), got, expected)
            compared += 1
    return compared


@pytest.mark.parametrize("library", [LIBC, LIBSTDCXX])
def test_rules_match_readelf_for_the_systems_libraries(library):
    need("readelf", library)
    assert compare_with_readelf(library) > 10000


@pytest.mark.parametrize("flags", [("-O2", "-fomit-frame-pointer"), ("-O0", "-fno-omit-frame-pointer")])
def test_rules_match_readelf_for_a_compiled_program(tmp_path, flags):
    need("readelf", "gcc")
    binary = tmp_path / "unwind_cases"
    subprocess.run(["gcc", "-g", *flags, f"-I{PROGRAMS}", str(PROGRAMS / "unwind_cases.c"),
                    "-o", str(binary)], check=True, capture_output=True)
    assert compare_with_readelf(str(binary)) > 20


def test_frame_pointer_functions_unwind_from_rbp(tmp_path):
    need("gcc")
    binary = tmp_path / "fp"
    subprocess.run(["gcc", "-O0", "-fno-omit-frame-pointer", f"-I{PROGRAMS}",
                    str(PROGRAMS / "unwind_cases.c"), "-o", str(binary)], check=True, capture_output=True)
    table = tables.read_table(str(binary))
    chain_3 = symbol_address(binary, "chain_3")
    # After push rbp; mov rsp,rbp the CFA is rbp+16 and the caller's rbp is at CFA-16.
    pc, cfa_off, kind, rbp_slot = table.lookup(chain_3 + 8)
    assert (kind, cfa_off, rbp_slot) == (cfi.ROW_CFA_RBP, 16, -2)
    assert table.frame_pointers


def test_system_libc_is_recognised_as_built_without_frame_pointers():
    need(LIBC)
    table = tables.read_table(LIBC)
    assert not table.frame_pointers
    assert table.count > 1000


def test_sigreturn_trampoline_and_outermost_frame_get_their_own_rows(tmp_path):
    need(LIBC, "gcc")
    libc = tables.read_table(LIBC)
    signal_fdes = [f for f in our_fdes(LIBC).values() if cfi.is_signal_frame(f)]
    assert signal_fdes, "glibc marks __restore_rt with the S augmentation"
    trampoline = signal_fdes[0]["initial_location"]
    assert libc.lookup(trampoline + 1)[2] == cfi.ROW_SIGNAL
    binary = tmp_path / "prog"
    subprocess.run(["gcc", "-O2", f"-I{PROGRAMS}", str(PROGRAMS / "unwind_cases.c"), "-o", str(binary)],
                   check=True, capture_output=True)
    # crt1's _start says the return address is undefined: the walk ends there.
    assert tables.read_table(str(binary)).lookup(symbol_address(binary, "_start") + 4)[2] == cfi.ROW_END


def test_addresses_between_functions_have_no_rule(tmp_path):
    need(LIBC)
    fdes = sorted(our_fdes(LIBC).values(), key=lambda f: f["initial_location"])
    table = tables.read_table(LIBC)
    gaps = [(a["initial_location"] + a["address_range"], b["initial_location"])
            for a, b in zip(fdes, fdes[1:]) if a["initial_location"] + a["address_range"] < b["initial_location"]]
    assert gaps
    for end, _ in gaps[:50]:
        assert table.lookup(end)[2] == cfi.ROW_NONE, hex(end)


def test_tables_are_cached_on_disk_by_build_id(tmp_path, monkeypatch):
    need(LIBC)
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tables, "_memory", {})
    built = tables.table_for(LIBC, "feedface")
    cached_file = tmp_path / "unwind" / "feedface.rows"
    assert cached_file.exists()
    monkeypatch.setattr(tables, "_memory", {})
    monkeypatch.setattr(tables, "read_table", lambda path: pytest.fail("cache not used"))
    assert tables.table_for(LIBC, "feedface") == built


def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch):
    need(LIBC)
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tables, "_memory", {})
    (tmp_path / "unwind").mkdir()
    (tmp_path / "unwind" / "cafe.rows").write_bytes(b"LTUW2\0" + b"\xff" * 11)
    assert tables.table_for(LIBC, "cafe").count > 1000


def test_a_file_without_cfi_is_a_clean_error(tmp_path):
    bogus = tmp_path / "not-elf"
    bogus.write_bytes(b"\x7fELF" + b"\0" * 60)
    with pytest.raises(tables.TableUnavailable):
        tables.read_table(str(bogus))


def symbol_address(binary: Path, name: str) -> int:
    out = subprocess.run(["nm", str(binary)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == name:
            return int(fields[0], 16)
    raise AssertionError(f"{name} not in {binary}")


def planted_table(tmp_path, key: str, rows: bytes):
    (tmp_path / "unwind").mkdir(exist_ok=True, mode=0o700)
    count = len(rows) // tables.ROW.size
    (tmp_path / "unwind" / f"{key}.rows").write_bytes(tables.HEADER.pack(tables.CACHE_MAGIC, count, 1) + rows)


@pytest.mark.parametrize("rows", [
    b"".join(tables.ROW.pack(pc, 8, cfi.ROW_CFA_RSP, 0) for pc in (0x40, 0x20, 0x30)),  # unsorted
    tables.ROW.pack(0x7FFF_FFFF, 8, cfi.ROW_CFA_RSP, 0),  # outside the binary's code
    tables.ROW.pack(0x2000, 8, 9, 0),  # a row kind the walker does not know
])
def test_a_planted_table_is_rebuilt_from_the_file(tmp_path, monkeypatch, rows):
    need(LIBC)
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tables, "_memory", {})
    planted_table(tmp_path, "beef", rows)
    table = tables.table_for(LIBC, "beef")
    assert table == tables.read_table(LIBC) and table.count > 1000


def test_a_fresh_table_passes_its_own_checks():
    need(LIBC)
    table = tables.read_table(LIBC)
    assert tables.valid_rows(table.rows, tables._text_range(LIBC))
