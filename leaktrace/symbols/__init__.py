"""User-space symbolization: addresses in a process -> function, file, line.

maps.py reads /proc/PID/maps, elf.py reads one ELF file (pyelftools),
debuginfo.py finds separate debug files, paths.py opens files inside a
container's root without leaving it, demangle.py reads C++ names, and
process.py puts them together for one process. Everything is cached for the run, so stacks can
still be symbolized after the process exited, for modules it had mapped.
"""
from .demangle import demangle
from .elf import ElfError, ElfSymbols, open_elf, open_elf_in_root, runtime_to_vaddr
from .maps import MapEntry, parse_maps, read_maps
from .paths import PathResolveError, open_in_root
from .process import ProcessSymbols

__all__ = [
    "ElfError",
    "ElfSymbols",
    "MapEntry",
    "PathResolveError",
    "ProcessSymbols",
    "demangle",
    "open_elf",
    "open_elf_in_root",
    "open_in_root",
    "parse_maps",
    "read_maps",
    "runtime_to_vaddr",
]
