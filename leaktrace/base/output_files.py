"""Files leaktrace writes for its user: reports (-o) and recordings (--record).

leaktrace often runs as root in directories other users can write (/tmp), so
an output path is never trusted to be what it looks like:
  - a symbolic link at the path is refused (O_NOFOLLOW), whoever planted it
    (/dev/stdout, /dev/stderr and /dev/fd/N name leaktrace's own descriptors
    and are written as they are);
  - an existing regular file is written only if it is ours and has no other
    hard link, and a FIFO or device only if it belongs to us or root, so a
    planted file, link or FIFO never receives a report or gets overwritten;
  - new files are created 0600: reports hold stacks and process names;
  - a whole-file output (pprof, flamegraph, plot, report -o) is written to a
    temporary with an unpredictable name next to it, created exclusively,
    then renamed over the path: a planted FILE.partial is never touched.
check() runs the same tests without creating anything, so commands can refuse
a bad path before they attach a single probe. Failures raise UsageError.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from typing import IO, Iterator, Optional

from .errors import UsageError

_DESCRIPTOR = re.compile(r"(/dev/stdout|/dev/stderr)|/(?:dev|proc/self)/fd/(\d+)")
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TRUSTED_OWNERS = {0}


def _fail(path: str, problem: str, what: str) -> UsageError:
    return UsageError(f"cannot write {path} ({what}): {problem}", hint=f"choose another path for {what}")


def _refusal(info: os.stat_result) -> str:
    """Why an existing file must not receive output, or ''."""
    euid = os.geteuid()
    if stat.S_ISREG(info.st_mode):
        if info.st_uid != euid:
            return f"it exists and belongs to user {info.st_uid}, not to this user"
        if info.st_nlink > 1:
            return "it has other hard links"
        return ""
    if stat.S_ISDIR(info.st_mode):
        return "it is a directory"
    if info.st_uid != euid and info.st_uid not in _TRUSTED_OWNERS:
        return f"it is a special file that belongs to user {info.st_uid}"
    return ""


def own_descriptor(path: str) -> Optional[int]:
    """The fd a path names in leaktrace's own process (/dev/stdout, /dev/fd/N,
    /proc/self/fd/N): already ours, so written as it is."""
    match = _DESCRIPTOR.fullmatch(path)
    if match is None:
        return None
    number = int(match.group(2)) if match.group(2) else (1 if match.group(1) == "/dev/stdout" else 2)
    try:
        os.fstat(number)
    except OSError:
        return None
    return number


def check(path: str, what: str = "-o", replace: bool = False) -> None:
    """Raise UsageError now if path could not receive output later.
    With replace, an existing regular file is replaced whoever owns it."""
    if own_descriptor(path) is not None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _fail(path, f"no directory {directory}", what)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _fail(path, f"directory {directory} is not writable", what)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _fail(path, exc.strerror, what) from None
    if stat.S_ISLNK(info.st_mode):
        raise _fail(path, "it is a symbolic link (leaktrace never writes through one)", what)
    if replace and stat.S_ISREG(info.st_mode):
        return
    problem = _refusal(info)
    if problem:
        raise _fail(path, problem, what)


def open_file(path: str, what: str = "-o", append: bool = False, binary: bool = False) -> IO:
    """path opened for writing in place: appended to, or emptied first."""
    descriptor = own_descriptor(path)
    if descriptor is not None:
        return os.fdopen(os.dup(descriptor), "ab" if binary else "a", **({} if binary else {"encoding": "utf-8"}))
    try:
        fd = os.open(path, _OPEN_FLAGS | (os.O_APPEND if append else 0), 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _fail(path, "it is a symbolic link (leaktrace never writes through one)", what) from None
        if exc.errno == errno.ENXIO:
            raise _fail(path, "it is a FIFO nobody reads", what) from None
        raise _fail(path, exc.strerror, what) from None
    try:
        info = os.fstat(fd)
        problem = _refusal(info)
        if problem:
            raise _fail(path, problem, what)
        os.set_blocking(fd, True)
        if stat.S_ISREG(info.st_mode) and not append:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab" if append else "wb") if binary else \
        open(fd, "a" if append else "w", encoding="utf-8")


@contextmanager
def replaced(path: str, what: str = "-o", binary: bool = False) -> Iterator[IO]:
    """A stream whose content replaces path's when the block ends without error.
    A FIFO or device (e.g. /dev/null) is written in place: renaming would replace it."""
    check(path, what, replace=True)
    try:
        special = own_descriptor(path) is not None or not stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        special = False
    if special:
        with open_file(path, what, binary=binary) as out:
            yield out
        return
    directory, name = os.path.split(os.path.abspath(path))
    try:  # mkstemp: O_EXCL, O_NOFOLLOW, a random name, mode 0600
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
    except OSError as exc:
        raise _fail(path, exc.strerror, what) from None
    try:
        with (os.fdopen(fd, "wb") if binary else open(fd, "w", encoding="utf-8")) as out:
            yield out
        os.replace(temporary, path)  # renames over a link or file; never writes through it
    except OSError as exc:
        _remove(temporary)
        raise _fail(path, exc.strerror, what) from None
    except BaseException:
        _remove(temporary)
        raise


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
