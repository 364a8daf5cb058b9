"""Symbolize one process's raw stacks: address -> function, module, line.

Contract: ProcessSymbols(process).symbolize(raw_stack), for a TracedProcess
(its maps, pinned root and liveness come from it), returns one model.Frame per
address and never raises. What it cannot resolve becomes an unknown frame
(symbol None, module set when the address is in a mapping) plus a one-line
entry in `warnings` (deduplicated). Maps and opened modules are cached, so
stacks still resolve after the process exited for every module it had mapped
while we looked; call prime() while it is alive to open them all up front.

A module's file is opened from, in order: /proc/PID/map_files/<range> (the
very file mapped, even if deleted; root only), the path opened inside
/proc/PID/root (paths.open_in_root: it never leaves that root), a copy out of
the container (copyout.DockerCopy, when a copier is given: Docker only; with
mode "always" it comes first), and the host's path. The mapped file's
build-id is read from its notes through map_files when the maps are read
(root only), and whatever is found elsewhere must carry it: a mismatch is
refused with a warning and marks the frames (BUILD_ID_MISMATCH). The host's
path is the container's choice, so the host file there is checked before it
is parsed: by that build-id (a notes-only read) when it is known, else by
device and inode against the mapping. Debug files come from the process's
root, the container, and on the host only from /usr/lib/debug/.build-id/.

Test hook: LEAKTRACE_SIMULATE_NO_PROC_ROOT=1 makes the map_files and
/proc/PID/root steps fail as they do for a tracer without CAP_SYS_ADMIN and
CAP_SYS_PTRACE over the target, so tests can prove the later steps work
(containers.root_access_problem reports the same).
"""
from __future__ import annotations

import os
import stat
from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from ..base import model
from ..process.containers import SIMULATE_NO_PROC_ROOT
from ..base.errors import LeaktraceError
from .copyout import DockerCopy
from .debuginfo import find_debug_file, host_debug_file
from .demangle import demangle
from .elf import (ElfError, ElfSymbols, open_elf, open_elf_fd, open_elf_in_root,
                  read_build_id_note, runtime_to_vaddr)
from .maps import MapEntry
from .paths import READ_FLAGS

if TYPE_CHECKING:  # traced_process reads maps through this package
    from ..process.traced_process import TracedProcess

BUILD_ID_MISMATCH = "build-id mismatch"
NOT_THE_MAPPED_FILE = "host file is not the mapped one"


@dataclass
class _Module:
    binary: Optional[ElfSymbols] = None  # the mapped file: segments, build-id
    symbols: Optional[ElfSymbols] = None  # where names come from (it, or its debug file)
    lines: Optional[ElfSymbols] = None  # where DWARF line tables come from
    note: str = ""


def _merge(old: List[MapEntry], new: List[MapEntry]) -> List[MapEntry]:
    """New entries, plus old ones they do not overlap (kept for dlclose'd code)."""
    new = sorted(new, key=lambda entry: entry.start)
    starts = [entry.start for entry in new]
    kept = list(new)
    for entry in old:
        index = bisect_right(starts, entry.start) - 1
        before = index >= 0 and new[index].end > entry.start
        after = index + 1 < len(new) and new[index + 1].start < entry.end
        if not before and not after:
            kept.append(entry)
    return sorted(kept, key=lambda entry: entry.start)


class ProcessSymbols:
    def __init__(self, process: TracedProcess, lines: bool = False, copier: Optional[DockerCopy] = None):
        self.process = process
        self.pid = process.pid
        self.root = process.root
        self.lines = lines
        self.copier = copier
        self._proc_files = os.environ.get(SIMULATE_NO_PROC_ROOT) != "1"
        self.warnings: List[str] = []
        self._warned = set()
        self._maps: List[MapEntry] = []
        self._starts: List[int] = []
        self._maps_read = False
        self._version = -1  # of the process's maps last merged in
        self._modules: Dict[Tuple[str, int, str], _Module] = {}
        # (dev, inode) of a mapping -> the build-id in the mapped file itself (None: unknown)
        self._mapped_ids: Dict[Tuple[str, int], Optional[str]] = {}

    def prime(self) -> None:
        """Read the maps and open every executable module, while the process lives.

        Raises TargetError (or PermissionProblem) when the maps cannot be read.
        """
        self._set_maps(self.process.maps())
        for entry in self._maps:
            if entry.executable and entry.file_backed:
                self._module(entry)

    def symbolize(self, raw: model.RawStack) -> Tuple[model.Frame, ...]:
        reread = [False]  # re-read the maps at most once per stack
        frames = []
        for index, addr in enumerate(raw.addresses):
            method = raw.methods[index] if index < len(raw.methods) else "fp"
            try:
                frames.append(self._frame(addr, method, index > 0, reread))
            except Exception as exc:  # a bug here must cost one frame, not the report
                self._warn(f"pid {self.pid}: cannot symbolize 0x{addr:x}: {exc}")
                frames.append(model.Frame(addr=addr, unwind=method))
        if raw.stop and frames:  # said on the frame the walk could not leave
            last = frames[-1]
            frames[-1] = replace(last, note="; ".join(filter(None, (last.note, raw.stop))))
        return tuple(frames)

    def _frame(self, addr: int, method: str, caller: bool, reread: List[bool]) -> model.Frame:
        entry = self._entry_for(addr, reread)
        if entry is None:
            return model.Frame(addr=addr, unwind=method, note="outside every mapping")
        if not entry.file_backed:
            return model.Frame(addr=addr, module=entry.path or "[anonymous]", unwind=method)
        module = self._module(entry)
        unknown = model.Frame(addr=addr, module=entry.path, unwind=method, note=module.note)
        if module.symbols is None:
            return unknown
        # A caller's address is a return address: look up the call instruction
        # before it, or a call that ends a function would name the next one.
        back = 1 if caller and addr > entry.start else 0
        vaddr = runtime_to_vaddr(
            addr - back, entry.start, entry.offset, module.binary.segments, entry.executable
        )
        hit = module.symbols.lookup(vaddr) if vaddr is not None else None
        if hit is None:
            return unknown
        name, offset = hit
        file, line = None, None
        if self.lines and module.lines is not None:
            file, line = module.lines.line_for(vaddr) or (None, None)
        return model.Frame(
            addr=addr, symbol=demangle(name), offset=offset + back, module=entry.path,
            file=file, line=line, unwind=method, note=module.note,
        )

    def _entry_for(self, addr: int, reread: List[bool]) -> Optional[MapEntry]:
        if not self._maps_read:
            self._refresh_maps()
        entry = self._find(addr)
        if entry is None and not reread[0]:
            reread[0] = True  # maybe dlopen'ed since the last read
            self._refresh_maps()
            entry = self._find(addr)
        return entry

    def _find(self, addr: int) -> Optional[MapEntry]:
        index = bisect_right(self._starts, addr) - 1
        if index >= 0 and self._maps[index].contains(addr):
            return self._maps[index]
        return None

    def _refresh_maps(self) -> None:
        self._maps_read = True
        if not self.process.alive():
            if not self._maps:
                self._warn(f"pid {self.pid} exited before its memory map was read; "
                           "its frames show as [unknown]")
            return
        try:
            self._set_maps(self.process.maps(fresh=True))
        except LeaktraceError as exc:
            self._warn(f"{exc.message}; frames outside modules seen earlier show as [unknown]")

    def _set_maps(self, entries: Tuple[MapEntry, ...]) -> None:
        self._maps_read = True
        if self.process.version == self._version:
            return  # the same text as last time: nothing new to merge
        self._version = self.process.version
        self._maps = _merge(self._maps, list(entries))
        self._starts = [entry.start for entry in self._maps]
        for entry in entries:
            if entry.executable and entry.file_backed:
                self._note_mapped_id(entry)

    def _note_mapped_id(self, entry: MapEntry) -> None:
        """Remember the mapped file's build-id while map_files can show it (root only):
        what is found later, after the process exited too, is checked against it."""
        identity = (entry.dev, entry.inode)
        if identity in self._mapped_ids:
            return
        build_id = None
        if self._proc_files:
            try:
                fd = os.open(self._map_file(entry), READ_FLAGS)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    build_id = read_build_id_note(fd)
                finally:
                    os.close(fd)
        self._mapped_ids[identity] = build_id

    def _module(self, entry: MapEntry) -> _Module:
        key = (entry.dev, entry.inode, entry.path)
        if key not in self._modules:
            self._modules[key] = self._open_module(entry)
        return self._modules[key]

    def _open_module(self, entry: MapEntry) -> _Module:
        binary, note = self._open_binary(entry)
        if binary is None:
            return _Module(note=note)
        debug = None
        if not binary.has_debug_symbols:
            debug = self._find_debug(binary, entry.path)
            if debug is None and binary.function_count == 0:
                self._warn(f"{entry.path} has no symbols (stripped, no debug file found)")
        symbols = debug if debug is not None and debug.has_debug_symbols else binary
        lines = debug if debug is not None and debug.has_dwarf else binary
        return _Module(binary, symbols, lines if lines.has_dwarf else None, note)

    def _find_debug(self, binary: ElfSymbols, path: str) -> Optional[ElfSymbols]:
        """Debug file from the process's root, the container (copy-out), the host."""
        searches = []
        if self._proc_files:
            searches.append(lambda: find_debug_file(binary, path, self.root))
        if self.copier is not None:
            searches.insert(0 if self.copier.first else len(searches),
                            lambda: self.copier.debug_file(binary, path))
        if self.root != "/":
            # The host's own build-id tree only: a debuglink's directory is the container's choice.
            searches.append(lambda: host_debug_file(binary))
        for search in searches:
            try:
                debug = search()
            except LeaktraceError as exc:
                self._warn(f"pid {self.pid}: {exc.message}")
                continue
            if debug is not None:
                return debug
        return None

    def _open_binary(self, entry: MapEntry) -> Tuple[Optional[ElfSymbols], str]:
        errors: List[str] = []
        expected = self._mapped_ids.get((entry.dev, entry.inode))
        mismatched = False
        if self.process.alive():
            for source, open_from in self._sources(entry):
                try:
                    binary = open_from()
                except LeaktraceError as exc:  # ElfError, CopyOutError
                    errors.append(exc.message)
                    continue
                if expected and binary.build_id != expected:
                    mismatched = True
                    self._warn(f"pid {self.pid}: {BUILD_ID_MISMATCH}: {entry.path} from {source} "
                               "is not the mapped file; not used")
                    continue
                return binary, ""
        binary, note = self._open_host_copy(entry, expected, errors)
        if binary is None:
            note = note or (BUILD_ID_MISMATCH if mismatched else "")
            # "cannot open" errors say least; a malformed file's error says why.
            telling = [e for e in errors if not e.startswith("cannot open")] or errors
            why = note or (telling[0] if telling else "the process exited before it was read")
            self._warn(f"pid {self.pid}: cannot read {entry.path} ({why}); "
                       "its frames show as [unknown]")
        return binary, note

    def _sources(self, entry: MapEntry) -> List[Tuple[str, Callable[[], ElfSymbols]]]:
        """(name, opener) of each place the process's own file may be read, in order."""
        sources = []
        if self._proc_files:
            sources.append(("map_files", lambda: open_elf(self._map_file(entry))))
            if not entry.deleted:  # else the path now names some other file, or nothing
                sources.append((self.process.root_name, lambda: open_elf_in_root(self.root, entry.path)))
        if self.copier is not None and not entry.deleted:
            identity = f"{entry.dev}:{entry.inode}"  # a replaced file is copied again
            sources.insert(0 if self.copier.first else len(sources),
                           ("docker cp", lambda: open_elf(self.copier.binary(entry.path, identity))))
        return sources

    def _map_file(self, entry: MapEntry) -> str:
        return f"/proc/{self.pid}/map_files/{entry.start:x}-{entry.end:x}"

    def _open_host_copy(self, entry: MapEntry, expected: Optional[str], errors: List[str]):
        """The host's file at the mapped path, only if it is provably the mapped one.

        The path is the container's choice: the file is identified before it is
        parsed, by the mapped build-id (notes only) when known, else by device
        and inode; a device or FIFO there is never even opened.
        """
        if entry.deleted:
            return None, ""
        try:
            info = os.stat(entry.path)
        except OSError as exc:
            errors.append(f"cannot open {entry.path}: {exc.strerror}")
            return None, ""
        same_inode = info.st_ino == entry.inode and _dev_text(info.st_dev) == entry.dev
        if not stat.S_ISREG(info.st_mode) or not (expected or same_inode):
            return None, NOT_THE_MAPPED_FILE
        try:
            fd = os.open(entry.path, READ_FLAGS)
        except OSError as exc:
            errors.append(f"cannot open {entry.path}: {exc.strerror}")
            return None, ""
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):  # swapped since the stat
            os.close(fd)
            return None, NOT_THE_MAPPED_FILE
        if expected and read_build_id_note(fd) != expected:
            os.close(fd)
            return None, BUILD_ID_MISMATCH
        try:
            binary = open_elf_fd(fd, entry.path)
        except ElfError as exc:
            errors.append(exc.message)
            return None, ""
        if expected and binary.build_id != expected:  # the notes said otherwise: trust neither
            return None, BUILD_ID_MISMATCH
        return binary, ""

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)


def _dev_text(st_dev: int) -> str:
    return f"{os.major(st_dev):02x}:{os.minor(st_dev):02x}"
