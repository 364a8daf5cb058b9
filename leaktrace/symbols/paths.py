"""Open a file the way a process inside another root sees it, without leaving that root.

Contract: open_in_root(root, path) returns an open, readable file descriptor
(the caller closes it) of the regular file `path` names inside `root` (the
host "/" or a container's /proc/PID/root): an absolute symlink starts again
at `root`, `..` never climbs above it, a /proc magic link is refused, and
more than MAX_SYMLINKS links is a loop (PathResolveError, like a file that is
not regular). OSError for what is missing or cannot be opened.

The check and the open are one step: the kernel's openat2(RESOLVE_IN_ROOT |
RESOLVE_NO_MAGICLINKS) on a descriptor of the root. Nothing returns a path
string to be opened later, because a container can swap any component for a
symlink to a host file between a check and an open. Callers that need a
path (bcc, the unwind table reader) use /proc/self/fd/N of the descriptor,
which names that very file; pin_in_root(root, path) returns such a path
and keeps its descriptor open for the run. Only where openat2 does not exist (ENOSYS:
Linux before 5.6, or a seccomp filter that hides it) does _walk() do the
same in user space, on descriptors too: each component opened O_NOFOLLOW
relative to its parent's descriptor and links read with readlinkat.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Dict, List, Tuple

from ..base.errors import LeaktraceError

MAX_SYMLINKS = 40  # the kernel's own limit (MAXSYMLINKS)
SYS_OPENAT2 = 437  # one number on every architecture (the syscall table unified at 424)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC
# O_NONBLOCK: whatever slips through, opening it must not hang on a FIFO.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_RETRIES = 8  # openat2 says EAGAIN when a rename raced with a ".." lookup


class PathResolveError(LeaktraceError):
    """A path under a root could not be resolved (symlink loop, magic link, not a file)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """The openat2 system call; raises OSError (ENOSYS where the kernel has none)."""
    how = _OpenHow(flags, 0, resolve)
    fd = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def open_in_root(root: str, path: str) -> int:
    """A readable descriptor of the regular file `path` names inside `root`."""
    root_fd = os.open(root, os.O_DIRECTORY | _PATH_FLAGS)
    try:
        found = _find(root_fd, root, path)
    finally:
        os.close(root_fd)
    try:
        info = os.fstat(found)
        if not stat.S_ISREG(info.st_mode):
            raise PathResolveError(f"{path} in {root} is not a regular file")
        # Reopening our own O_PATH descriptor resolves nothing: it is that inode.
        return os.open(f"/proc/self/fd/{found}", READ_FLAGS)
    finally:
        os.close(found)


_pinned: Dict[Tuple[int, int, int, int], int] = {}  # file version -> descriptor held open


def pin_in_root(root: str, path: str) -> str:
    """/proc/self/fd/N of the file `path` names inside `root`, held open for the run:
    a path for readers that take one (bcc, the kernel's uprobe) that is never
    resolved inside the root again. Raises what open_in_root raises."""
    fd = open_in_root(root, path)
    info = os.fstat(fd)
    version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if version in _pinned:
        os.close(fd)
    else:
        _pinned[version] = fd
    return f"/proc/self/fd/{_pinned[version]}"


def unpin_all() -> None:
    """Close what pin_in_root holds (tests; a long-running daemon between runs)."""
    while _pinned:
        os.close(_pinned.popitem()[1])


def _find(root_fd: int, root: str, path: str) -> int:
    """An O_PATH descriptor of what `path` names under root_fd (not opened for reading,
    so a device or FIFO planted there is never opened)."""
    for _ in range(_RETRIES):
        try:
            return openat2(root_fd, path, _PATH_FLAGS, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                return _walk(root_fd, root, path)  # no openat2 in this kernel: see the docstring
            if exc.errno == errno.ELOOP:
                raise _loop(root, path) from None
            if exc.errno != errno.EAGAIN:
                raise
    raise OSError(errno.EAGAIN, "the path kept changing while it was resolved", path)


def _walk(root_fd: int, root: str, path: str) -> int:
    """openat2(RESOLVE_IN_ROOT) in user space, one descriptor per component."""
    stack: List[int] = []  # descriptors of the components below the root, innermost last
    pending = list(reversed(path.split("/")))
    links = 0
    try:
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if stack:
                    os.close(stack.pop())
                continue
            parent = stack[-1] if stack else root_fd
            fd = os.open(part, _PATH_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                stack.append(fd)
                continue
            try:
                target = os.readlink("", dir_fd=fd)  # this very link, not whatever has its name now
            finally:
                os.close(fd)
            links += 1
            if links > MAX_SYMLINKS:
                raise _loop(root, path)
            if target.startswith("/"):
                while stack:
                    os.close(stack.pop())
            pending.extend(reversed(target.split("/")))
        return stack.pop() if stack else os.dup(root_fd)
    finally:
        for fd in stack:
            os.close(fd)


def _loop(root: str, path: str) -> PathResolveError:
    return PathResolveError(
        f"too many symbolic links (or a /proc magic link) resolving {path} under {root}",
        hint="the path contains a symlink loop",
    )
