"""Find the allocator a process really uses, and which of its functions to hook.

The dynamic linker binds `malloc` to the first object in its search order that
defines it: the executable, then the LD_PRELOAD libraries and those in
/etc/ld.so.preload, then DT_NEEDED libraries breadth-first (libc usually
last, as a dependency of everything). search_order() computes that order, for
a running process (from its maps and environment) and for a program about to
be started (from the files, as the linker would find them); the allocator is
the first object in it that defines malloc. Which functions are hooked, and
where, is probes/alloc_functions.py's table: mmap, munmap and mremap are
system-call wrappers that always come from libc (or from the executable when
it is static).
"""
from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from elftools.elf.elffile import ELFFile

from ..base.errors import TargetError, UsageError
from ..symbols import ElfError, open_elf
from ..symbols.paths import READ_FLAGS, PathResolveError, pin_in_root
from ..process.traced_process import TracedProcess
from .alloc_functions import BY_NAME, FUNCTIONS
from .forwarders import drop_forwarders, jump_target

_KNOWN_ALLOCATORS = (
    ("jemalloc", "jemalloc"),
    ("tcmalloc", "tcmalloc"),
    ("mimalloc", "mimalloc"),
    ("libc.so", "glibc"),
    ("libc.musl", "musl"),
    ("ld-musl", "musl"),
)
MAX_OBJECTS = 256  # more libraries than real processes load; bounds a hostile tree
DEFAULT_LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                        "/lib64", "/usr/lib64", "/lib", "/usr/lib")


@dataclass(frozen=True)
class Hook:
    """One symbol to probe: a name of one row of the table, in one object."""

    function: str  # the row (alloc_functions.BY_NAME): which handlers run
    symbol: str  # where the probe goes
    path: str  # host-visible path of the object that defines it
    object: str = ""  # the object's path as the process sees it (for the report)


@dataclass(frozen=True)
class HookPlan:
    """Which object provides each hooked symbol, for one process."""

    pid: int
    allocator_path: str  # path as the process sees it
    allocator_name: str
    hooks: Tuple[Hook, ...]  # table order: a row's symbols together

    def objects(self) -> Dict[str, List[Hook]]:
        """host path -> its hooks."""
        by_object: Dict[str, List[Hook]] = {}
        for hook in self.hooks:
            by_object.setdefault(hook.path, []).append(hook)
        return by_object

    def provider(self, function: str) -> Optional[str]:
        """Host path of the object whose symbols of `function` are hooked."""
        return next((hook.path for hook in self.hooks if hook.function == function), None)


def allocator_name(path: str, is_executable: bool) -> str:
    base = os.path.basename(path)
    for needle, name in _KNOWN_ALLOCATORS:
        if needle in base:
            return name
    return "static" if is_executable else base


def _defines(path: str, name: str) -> bool:
    try:
        return open_elf(path).find_function(name) is not None
    except (ElfError, OSError):
        return False


def defines_malloc(path: str) -> bool:
    """Whether the object at path defines malloc (an allocator of its own)."""
    return _defines(path, "malloc")


def choose_allocator(candidates: Sequence[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
    """candidates: (process path, host path) in symbol search order, executable first.

    The first that defines malloc, which is where the dynamic linker binds it.
    """
    for pair in candidates:
        if _defines(pair[1], "malloc"):
            return pair
    return None


def _override(obj: str) -> Tuple[str, str]:
    """The object --obj names, when it can be an allocator: it defines malloc
    under one of its names (a je_-prefixed jemalloc defines je_malloc)."""
    if not os.path.exists(obj):
        raise UsageError(f"--obj {obj}: no such file")
    if not any(_defines(obj, symbol) for symbol in BY_NAME["malloc"].hooked_symbols):
        raise UsageError(f"--obj {obj} does not define malloc", hint="name the allocator library, e.g. libjemalloc.so.2")
    return (obj, obj)


@dataclass(frozen=True)
class _Dynamic:
    """The dynamic-section entries the linker's search depends on."""

    needed: Tuple[str, ...] = ()
    soname: str = ""
    rpath: Tuple[str, ...] = ()
    runpath: Tuple[str, ...] = ()


def _dynamic(path: str) -> _Dynamic:
    """DT_NEEDED, DT_SONAME, DT_RPATH and DT_RUNPATH of an ELF file; empty if unreadable."""
    try:
        fd = os.open(path, READ_FLAGS)  # a FIFO planted where a library should be must not hang us
    except OSError:
        return _Dynamic()
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or stream.read(4) != b"\x7fELF":
            return _Dynamic()
        stream.seek(0)
        try:
            section = ELFFile(stream).get_section_by_name(".dynamic")
            tags = [] if section is None else list(section.iter_tags())
            by_tag: Dict[str, List[str]] = {}
            for tag in tags:
                name = tag.entry.d_tag
                if name in ("DT_NEEDED", "DT_SONAME", "DT_RPATH", "DT_RUNPATH"):
                    by_tag.setdefault(name, []).append(getattr(tag, name[3:].lower()))
        except Exception:  # pyelftools raises many types on damaged files
            return _Dynamic()

    def dirs(name: str) -> Tuple[str, ...]:
        return tuple(d for value in by_tag.get(name, ()) for d in value.split(":") if d)

    return _Dynamic(needed=tuple(by_tag.get("DT_NEEDED", ())), soname=(by_tag.get("DT_SONAME") or [""])[0],
                    rpath=dirs("DT_RPATH"), runpath=dirs("DT_RUNPATH"))


def _split_preload(text: str) -> List[str]:
    # ld.so splits LD_PRELOAD at spaces and colons, ld.so.preload at whitespace and colons.
    return text.replace(":", " ").split()


def _read_text(path: str, limit: int = 4 << 20) -> str:
    """A small regular file's text, "" if unreadable; a FIFO or a device planted
    in a container's /etc neither hangs nor floods us."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        try:
            return stream.read(limit).decode("utf-8", errors="replace")
        except OSError:
            return ""


def search_order(executable: str, preload: Sequence[str], needed: Callable[[str], Sequence[str]],
                 resolve: Callable[[str, str], Optional[str]]) -> List[str]:
    """Objects in the order the dynamic linker searches them for a symbol.

    The executable, the preloaded libraries, then every object's DT_NEEDED
    breadth-first, each object once. resolve(name, loader) turns a preload
    entry or a DT_NEEDED soname into an object, or None when the linker would
    not load one; needed(object) lists its DT_NEEDED entries.
    """
    order = [executable]
    for name in preload:
        path = resolve(name, executable)
        if path and path not in order:
            order.append(path)
    queue = list(order)
    while queue and len(order) < MAX_OBJECTS:
        loader = queue.pop(0)
        for name in needed(loader):
            path = resolve(name, loader)
            if path and path not in order:
                order.append(path)
                queue.append(path)
    return order


def _host_path(process: TracedProcess, path: str) -> str:
    """A path the host can open for a file the process mapped: /proc/self/fd/N of
    the file opened inside the process's root (paths.pin_in_root), so neither
    bcc nor the kernel's uprobe resolves the container's path again."""
    if os.path.isdir(process.root):
        try:
            return pin_in_root(process.root, path)
        except (OSError, PathResolveError):
            return ""  # nothing there inside the root; no host file stands in for it
    return path


def _mapped_objects(process: TracedProcess) -> List[str]:
    """Executable-mapped files in address order, the executable first."""
    seen: List[str] = []
    exe = ""
    try:
        exe = os.readlink(f"/proc/{process.pid}/exe").removesuffix(" (deleted)")
    except OSError:
        pass
    for entry in process.maps():
        if not entry.executable or not entry.path.startswith("/") or entry.path in seen:
            continue
        seen.append(entry.path)
    if exe in seen:
        seen.remove(exe)
        seen.insert(0, exe)
    return seen


def _process_preload(process: TracedProcess) -> List[str]:
    """What the linker preloaded: LD_PRELOAD as it was at exec, then ld.so.preload."""
    environ = _read_text(f"/proc/{process.pid}/environ").split("\0")
    # ld.so takes the last LD_PRELOAD when the environment holds several.
    values = [var[len("LD_PRELOAD="):] for var in environ if var.startswith("LD_PRELOAD=")]
    entries = _split_preload(values[-1]) if values else []
    return entries + _split_preload(_read_text(_host_path(process, "/etc/ld.so.preload")))


def _in_search_order(process: TracedProcess, objects: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """objects (process path, host path) in the linker's search order.

    Names are matched against what the process really mapped (by path, file name or
    DT_SONAME), so a preload the linker ignored counts for nothing; objects
    the search never reaches (dlopen) follow in address order.
    """
    if not objects:
        return objects
    host = dict(objects)
    dynamic: Dict[str, _Dynamic] = {}

    def info(path: str) -> _Dynamic:
        if path not in dynamic:
            dynamic[path] = _dynamic(host[path])
        return dynamic[path]

    def resolve(name: str, loader: str) -> Optional[str]:
        if name in host:
            return name
        base = os.path.basename(name)
        for matches in (lambda path: os.path.basename(path) == base, lambda path: info(path).soname == base):
            for path, _ in objects:
                if matches(path):
                    return path
        return None

    order = search_order(objects[0][0], _process_preload(process), lambda path: info(path).needed, resolve)
    order += [path for path, _ in objects if path not in order]
    return [(path, host[path]) for path in order]


def _plan(pid: int, chosen: Tuple[str, str], objects: Iterable[Tuple[str, str]], exe_path: str) -> HookPlan:
    objects = list(objects)
    others = {
        "libc": [o for o in objects if "libc" in os.path.basename(o[0])],
        "unwinder": [o for o in objects if "libgcc_s" in os.path.basename(o[0])] + objects[:1],
    }
    hooks: List[Hook] = []
    for function in FUNCTIONS:
        if function.defined_by == "unwinder" and not any(BY_NAME[h.function].throws for h in hooks):
            continue  # nothing hooked throws: exceptions need no help
        # libc's wrappers and the unwinder: the allocator object itself first (static binaries).
        providers = [chosen] + others.get(function.defined_by, [])
        for process_path, host in providers:
            defined = [symbol for symbol in function.hooked_symbols if _defines(host, symbol)]
            if defined:  # every name of the row this object defines; aliases are dropped at attach
                hooks += [Hook(function.name, symbol, host, process_path) for symbol in defined]
                break
    return HookPlan(
        pid=pid,
        allocator_path=chosen[0],
        allocator_name=allocator_name(chosen[0], chosen[0] == exe_path),
        hooks=tuple(_without_forwarders(hooks)),
    )


def _without_forwarders(hooks: List[Hook]) -> List[Hook]:
    """hooks without the entry points that only jump to another hooked one (forwarders.py)."""
    kept: List[Hook] = []
    for path in dict.fromkeys(hook.path for hook in hooks):
        try:
            elf = open_elf(path)
        except (ElfError, OSError):
            kept += [hook for hook in hooks if hook.path == path]
            continue

        def address_of(symbol: str) -> Optional[int]:
            found = elf.find_function(symbol)
            return found[0] if found else None

        def name_at(address: int) -> Optional[str]:
            found = elf.lookup(address)
            return found[0] if found and found[1] == 0 else None

        kept += drop_forwarders([hook for hook in hooks if hook.path == path], lambda hook: hook.symbol,
                                address_of, lambda symbol: jump_target(path, symbol, name_at))
    return sorted(kept, key=hooks.index)


# A process attached the instant it started (`./server & leaktrace attach -p $!`)
# may still be in ld.so, with only itself and the loader mapped: wait for its
# libraries that long before looking for the allocator.
LOADER_WAIT_S = 2.0
LOADER_POLL_S = 0.01


def still_loading(objects: Sequence[Tuple[str, str]], needed: Callable[[str], Sequence[str]]) -> bool:
    """Whether the loader has yet to map the libraries: the executable (first
    of objects, as (path, host path)) names some, and at most it and the
    loader are mapped."""
    return 0 < len(objects) <= 2 and bool(needed(objects[0][1]))


def _loaded_objects(process: TracedProcess) -> List[Tuple[str, str]]:
    """(path, host path) of the mapped objects once the loader has mapped the
    libraries, or as they are after LOADER_WAIT_S."""
    deadline = time.monotonic() + LOADER_WAIT_S
    while True:
        objects = [(path, _host_path(process, path)) for path in _mapped_objects(process)]
        if time.monotonic() >= deadline or not still_loading(objects, lambda path: _dynamic(path).needed):
            return objects
        time.sleep(LOADER_POLL_S)
        process.maps(fresh=True)


def discover(process: TracedProcess, obj: Optional[str] = None) -> HookPlan:
    """The hook plan for a running process; --obj overrides the allocator."""
    pid = process.pid
    objects = _in_search_order(process, _loaded_objects(process))
    exe_path = objects[0][0] if objects else ""
    chosen = _override(obj) if obj else choose_allocator(objects)
    if chosen is None:
        raise TargetError(
            f"no allocator found in process {pid}: none of its objects defines malloc",
            hint="pass the allocator with --obj PATH",
        )
    return _plan(pid, chosen, objects, exe_path)


def _ldconfig_paths() -> Dict[str, str]:
    """soname -> path from the dynamic linker cache."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    paths: Dict[str, str] = {}
    for line in out.splitlines()[1:]:
        name, _, path = line.strip().partition(" => ")
        soname = name.split(" (")[0]
        if path and soname not in paths and ("x86-64" in name or "libc6," in name or "64" in name):
            paths[soname] = path
    return paths


def _file_resolver(executable: str, env: Dict[str, str]) -> Tuple[Callable, Callable]:
    """(resolve, needed) for search_order(), finding libraries on disk as ld.so does.

    DT_RPATH of the loader and the executable (unless the loader has
    DT_RUNPATH), LD_LIBRARY_PATH, DT_RUNPATH, ld.so.cache, the default dirs.
    """
    library_path = [d for d in env.get("LD_LIBRARY_PATH", "").replace(";", ":").split(":") if d]
    dynamic: Dict[str, _Dynamic] = {}
    cache: List[Dict[str, str]] = []  # ldconfig runs only when a name needs it

    def info(path: str) -> _Dynamic:
        if path not in dynamic:
            dynamic[path] = _dynamic(path)
        return dynamic[path]

    def expand(directory: str, loader: str) -> str:
        origin = os.path.dirname(loader)
        return directory.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)

    def resolve(name: str, loader: str) -> Optional[str]:
        if "/" in name:
            return os.path.realpath(name) if os.path.isfile(name) else None
        dirs = []
        if not info(loader).runpath:
            dirs += [expand(d, loader) for d in info(loader).rpath]
            if not info(executable).runpath:
                dirs += [expand(d, executable) for d in info(executable).rpath]
        dirs += library_path + [expand(d, loader) for d in info(loader).runpath]
        for candidate in [os.path.join(d, name) for d in dirs]:
            if os.path.isfile(candidate):
                return os.path.realpath(candidate)
        if not cache:
            cache.append(_ldconfig_paths())
        for candidate in [cache[0].get(name, "")] + [os.path.join(d, name) for d in DEFAULT_LIBRARY_DIRS]:
            if candidate and os.path.isfile(candidate):
                return os.path.realpath(candidate)
        return None

    return resolve, lambda path: info(path).needed


def discover_for_command(executable: str, env: Dict[str, str], obj: Optional[str] = None) -> HookPlan:
    """The hook plan for a program about to be started (leaktrace run).

    The same search order as for a running process, worked out from the
    files: the executable, LD_PRELOAD and /etc/ld.so.preload, then DT_NEEDED.
    """
    resolve, needed = _file_resolver(executable, env)
    preload = _split_preload(env.get("LD_PRELOAD", "")) + _split_preload(_read_text("/etc/ld.so.preload"))
    objects = [(path, path) for path in search_order(executable, preload, needed, resolve)]
    chosen = _override(obj) if obj else choose_allocator(objects)
    if chosen is None:
        raise TargetError(f"no allocator found for {executable}", hint="pass the allocator with --obj PATH")
    return _plan(0, chosen, objects, executable)
