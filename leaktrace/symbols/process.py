"""Symbolize one process's raw stacks: address -> function, module, line.

Contract: ProcessSymbols(pid).symbolize(raw_stack) returns one model.Frame per
address and never raises. What it cannot resolve becomes an unknown frame
(symbol None, module set when the address is in a mapping) plus a one-line
entry in `warnings` (deduplicated). Maps and opened modules are cached, so
stacks still resolve after the process exited for every module it had mapped
while we looked; call prime() while it is alive to open them all up front.

A module's file is opened from, in order: /proc/PID/map_files/<range> (the
very file mapped, even if deleted; root only), /proc/PID/root + path resolved
inside that root, a copy out of the container (copyout.DockerCopy, when a
copier is given: Docker only; with mode "always" it comes first), and the
host's path - the last only if it is provably the mapped file (same build-id
as seen earlier, or same device and inode). A copy whose build-id differs
from the mapped file's (where that is known) is refused with a warning.

Test hook: LEAKTRACE_SIMULATE_NO_PROC_ROOT=1 makes the map_files and
/proc/PID/root steps fail as they do for a tracer without CAP_SYS_ADMIN and
CAP_SYS_PTRACE over the target, so tests can prove the later steps work.
"""
from __future__ import annotations

import os
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from .. import model
from ..errors import LeaktraceError
from .copyout import DockerCopy
from .debuginfo import find_debug_file
from .demangle import demangle
from .elf import ElfError, ElfSymbols, open_elf, runtime_to_vaddr
from .maps import MapEntry, read_maps
from .paths import resolve_in_root

BUILD_ID_MISMATCH = "build-id mismatch"
NOT_THE_MAPPED_FILE = "host file is not the mapped one"
SIMULATE_NO_PROC_ROOT = "LEAKTRACE_SIMULATE_NO_PROC_ROOT"


@dataclass
class _Module:
    binary: Optional[ElfSymbols] = None  # the mapped file: segments, build-id
    symbols: Optional[ElfSymbols] = None  # where names come from (it, or its debug file)
    lines: Optional[ElfSymbols] = None  # where DWARF line tables come from
    note: str = ""


def _start_time(pid: int) -> Optional[str]:
    # Field 22 of /proc/PID/stat tells a process from a later one reusing its pid.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


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
    def __init__(self, pid: int, root: Optional[str] = None, lines: bool = False,
                 copier: Optional[DockerCopy] = None):
        self.pid = pid
        self.root = root if root is not None else f"/proc/{pid}/root"
        self.lines = lines
        self.copier = copier
        self._proc_files = os.environ.get(SIMULATE_NO_PROC_ROOT) != "1"
        self.warnings: List[str] = []
        self._warned = set()
        self._maps: List[MapEntry] = []
        self._starts: List[int] = []
        self._maps_read = False
        self._started = None  # start time seen at the first maps read
        self._modules: Dict[Tuple[str, int, str], _Module] = {}
        self._build_ids: Dict[str, str] = {}  # maps path -> build-id seen in the real file

    def prime(self) -> None:
        """Read the maps and open every executable module, while the process lives.

        Raises TargetError (or PermissionProblem) when the maps cannot be read.
        """
        self._set_maps(read_maps(self.pid))
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
        if not self._alive():
            if not self._maps:
                self._warn(f"pid {self.pid} exited before its memory map was read; "
                           "its frames show as [unknown]")
            return
        try:
            self._set_maps(read_maps(self.pid))
        except LeaktraceError as exc:
            self._warn(f"{exc.message}; frames outside modules seen earlier show as [unknown]")

    def _set_maps(self, entries: List[MapEntry]) -> None:
        if self._started is None:
            self._started = _start_time(self.pid)
        self._maps = _merge(self._maps, entries)
        self._starts = [entry.start for entry in self._maps]
        self._maps_read = True

    def _alive(self) -> bool:
        """The same process still holds the pid (not exited, not reused)."""
        now = _start_time(self.pid)
        return now is not None and (self._started is None or now == self._started)

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
            searches.append(lambda: find_debug_file(binary, path, "/"))  # build-id/CRC checked
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
        if self._alive():
            for path_of in self._process_paths(entry):
                try:
                    binary = open_elf(path_of())
                except LeaktraceError as exc:  # ElfError, PathResolveError, CopyOutError
                    errors.append(exc.message)
                    continue
                if binary.build_id:
                    self._build_ids[entry.path] = binary.build_id
                return binary, ""
        binary, note = self._open_host_copy(entry, errors)
        if binary is None:
            # "cannot open" errors say least; a malformed file's error says why.
            telling = [e for e in errors if not e.startswith("cannot open")] or errors
            why = note or (telling[0] if telling else "the process exited before it was read")
            self._warn(f"pid {self.pid}: cannot read {entry.path} ({why}); "
                       "its frames show as [unknown]")
        return binary, note

    def _process_paths(self, entry: MapEntry) -> List[Callable[[], str]]:
        paths = []
        if self._proc_files:
            paths.append(lambda: self._map_file(entry))
            if not entry.deleted:  # else the path now names some other file, or nothing
                paths.append(lambda: resolve_in_root(self.root, entry.path))
        if self.copier is not None and not entry.deleted:
            identity = f"{entry.dev}:{entry.inode}"  # a replaced file is copied again
            paths.insert(0 if self.copier.first else len(paths),
                         lambda: self._copy_out(entry, identity))
        return paths

    def _map_file(self, entry: MapEntry) -> str:
        return f"/proc/{self.pid}/map_files/{entry.start:x}-{entry.end:x}"

    def _copy_out(self, entry: MapEntry, identity: str) -> str:
        """The container's copy of a module, refused if it is not the mapped file."""
        path = self.copier.binary(entry.path, identity)
        mapped = None
        if self._proc_files:
            try:  # the very mapped file, when map_files is readable
                mapped = open_elf(self._map_file(entry)).build_id
            except LeaktraceError:
                pass
        copied = open_elf(path).build_id
        if mapped and copied and mapped != copied:
            message = f"{BUILD_ID_MISMATCH}: {entry.path} in the container is not the mapped file"
            self._warn(f"pid {self.pid}: {message}; not used")
            raise ElfError(message)
        return path

    def _open_host_copy(self, entry: MapEntry, errors: List[str]):
        """The host's file at the same path, if it is provably the mapped one."""
        if entry.deleted:
            return None, ""
        try:
            binary = open_elf(entry.path)
            info = os.stat(entry.path)
        except (ElfError, OSError) as exc:
            errors.append(getattr(exc, "message", str(exc)))
            return None, ""
        known = self._build_ids.get(entry.path)
        if known is not None:
            return (binary, "") if binary.build_id == known else (None, BUILD_ID_MISMATCH)
        same_inode = info.st_ino == entry.inode and _dev_text(info.st_dev) == entry.dev
        return (binary, "") if same_inode else (None, NOT_THE_MAPPED_FILE)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)


def _dev_text(st_dev: int) -> str:
    return f"{os.major(st_dev):02x}:{os.minor(st_dev):02x}"
