"""Find the allocator a process really uses, and which of its functions to hook.

The dynamic linker resolves `malloc` to the first object in search order that
defines it: the executable, then LD_PRELOAD libraries, then DT_NEEDED
libraries breadth-first, libc last in practice. So: the executable if it
defines malloc (static binaries, programs with their own allocator), else the
first non-libc library that does (jemalloc, tcmalloc, mimalloc), else libc.
mmap, munmap and mremap are system-call wrappers that always come from libc
(or from the executable when it is static).
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import TargetError, UsageError
from .symbols import ElfError, open_elf, read_maps
from .symbols.paths import PathResolveError, pin_in_root

HEAP_FUNCTIONS = (
    "malloc", "calloc", "realloc", "reallocarray", "free",
    "posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc",
)
MMAP_FUNCTIONS = ("mmap", "munmap", "mremap")

_KNOWN_ALLOCATORS = (
    ("jemalloc", "jemalloc"),
    ("tcmalloc", "tcmalloc"),
    ("mimalloc", "mimalloc"),
    ("libc.so", "glibc"),
    ("libc.musl", "musl"),
    ("ld-musl", "musl"),
)


@dataclass(frozen=True)
class HookPlan:
    """Which object provides each hooked function, for one process."""

    pid: int
    allocator_path: str  # path as the process sees it
    allocator_name: str
    host_paths: Tuple[Tuple[str, str], ...]  # (function, host-visible path of its object)

    def objects(self) -> Dict[str, List[str]]:
        by_object: Dict[str, List[str]] = {}
        for function, path in self.host_paths:
            by_object.setdefault(path, []).append(function)
        return by_object


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


def choose_allocator(candidates: Sequence[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
    """candidates: (process path, host path) in symbol search order, executable first.

    Returns the first that defines malloc, preferring a non-libc library over
    libc (libc is a dependency of every other library, so it comes last).
    """
    defining = [pair for pair in candidates if _defines(pair[1], "malloc")]
    if not defining:
        return None
    exe = candidates[0] if candidates else None
    if exe in defining:
        return exe
    for pair in defining:
        if "libc.so" not in os.path.basename(pair[0]):
            return pair
    return defining[0]


def _host_path(pid: int, path: str) -> str:
    """A path the host can open for a file the process mapped: /proc/self/fd/N of
    the file opened inside the process's root (paths.pin_in_root), so neither
    bcc nor the kernel's uprobe resolves the container's path again."""
    root = f"/proc/{pid}/root"
    if os.path.isdir(root):
        try:
            return pin_in_root(root, path)
        except (OSError, PathResolveError):
            return ""  # nothing there inside the root; no host file stands in for it
    return path


def _mapped_objects(pid: int) -> List[str]:
    """Executable-mapped files in load order (the executable first)."""
    seen: List[str] = []
    exe = ""
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        pass
    for entry in read_maps(pid):
        if not entry.executable or not entry.path.startswith("/") or entry.path in seen:
            continue
        seen.append(entry.path)
    if exe in seen:
        seen.remove(exe)
        seen.insert(0, exe)
    return seen


def _plan(pid: int, chosen: Tuple[str, str], objects: Iterable[Tuple[str, str]], exe_path: str) -> HookPlan:
    objects = list(objects)
    hooks = [(fn, chosen[1]) for fn in HEAP_FUNCTIONS if _defines(chosen[1], fn)]
    for fn in MMAP_FUNCTIONS:
        # Prefer the allocator object itself (static binaries), else libc.
        for _, host in [chosen] + [o for o in objects if "libc" in os.path.basename(o[0])]:
            if _defines(host, fn):
                hooks.append((fn, host))
                break
    return HookPlan(
        pid=pid,
        allocator_path=chosen[0],
        allocator_name=allocator_name(chosen[0], chosen[0] == exe_path),
        host_paths=tuple(hooks),
    )


def discover(pid: int, obj: Optional[str] = None) -> HookPlan:
    """The hook plan for a running process; --obj overrides the allocator."""
    objects = [(path, _host_path(pid, path)) for path in _mapped_objects(pid)]
    exe_path = objects[0][0] if objects else ""
    if obj:
        if not os.path.exists(obj):
            raise UsageError(f"--obj {obj}: no such file")
        if not _defines(obj, "malloc"):
            raise UsageError(f"--obj {obj} does not define malloc", hint="name the allocator library, e.g. libjemalloc.so.2")
        chosen = (obj, obj)
    else:
        chosen = choose_allocator(objects)
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


def discover_for_command(executable: str, env: Dict[str, str], obj: Optional[str] = None) -> HookPlan:
    """The hook plan for a program about to be started (leaktrace run).

    Follows the linker's search order statically: the executable, LD_PRELOAD,
    then DT_NEEDED breadth-first, resolved through ldconfig's cache.
    """
    cache = _ldconfig_paths()
    order: List[str] = [executable]
    order += [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    queue = [executable]
    while queue and len(order) < 64:
        current = queue.pop(0)
        try:
            needed = open_elf(current).needed
        except (ElfError, OSError, AttributeError):
            needed = ()
        for soname in needed:
            path = soname if "/" in soname else cache.get(soname, "")
            if path and path not in order:
                order.append(path)
                queue.append(path)
    objects = [(path, path) for path in order]
    if obj:
        chosen = (obj, obj)
    else:
        chosen = choose_allocator(objects)
    if chosen is None:
        raise TargetError(f"no allocator found for {executable}", hint="pass the allocator with --obj PATH")
    return _plan(0, chosen, objects, executable)
