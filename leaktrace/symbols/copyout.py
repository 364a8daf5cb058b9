"""Copy binaries and debug files out of a Docker container into a private cache.

Contract: DockerCopy(container_id, mode) is the third place process.py looks
for a module (after /proc/PID/map_files and /proc/PID/root, before the host's
own path; first of all with mode "always"). binary(path, identity) returns
the host path of a private copy of the container's file; debug_file() finds
a stripped binary's debug file (/usr/lib/debug/.build-id/..., then the
.gnu_debuglink candidates) the same way, accepted only when its build-id or
CRC matches. Failures raise CopyOutError with a one-line message.

The cache (containers/ in leaktrace/base/cache.py's directory, mode 0700, files
0600: copies are never executable and never run) is keyed by container and
build-id: a build-id is only a note in the file, so a copy one container
provides is never used for another (a hostile container could plant a debug
file that names another's frames). An index maps (container, path,
device:inode the process mapped) to the build-id, so a later run finds a
module without running docker at all. `docker cp CONTAINER:PATH -` writes
a tar stream that is read here member by member: a symlink in it is
followed by asking the container again (the daemon resolves it inside the
container), never by touching a host path, and nothing but a regular file's
bytes ever reaches the disk.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Optional

from ..base import cache as leaktrace_cache
from ..process.containers import daemon_unreachable, docker_command, docker_failure
from ..base.errors import LeaktraceError
from .debuginfo import build_id_path, debuglink_candidates, file_crc32
from .elf import ElfError, ElfSymbols, open_elf

MODES = ("auto", "always", "never")
COPY_TIMEOUT_S = 60
MAX_COPY_BYTES = 2 << 30  # a debug file of a large binary; more is not a module
MAX_LINK_HOPS = 8
_CHUNK = 1 << 20


class CopyOutError(LeaktraceError):
    """A file could not be copied out of a container."""


def private_dir(path: Path) -> Path:
    """Create path (0700) or check an existing one is ours and private."""
    try:
        return leaktrace_cache.private_dir(path)
    except (leaktrace_cache.Untrusted, OSError) as exc:
        raise CopyOutError(f"cache directory {path} is not a private directory of this user ({exc})",
                           hint="remove it, or point LEAKTRACE_CACHE_DIR elsewhere") from None


class DockerCopy:
    """docker cp out of one container, through the build-id cache."""

    def __init__(self, container_id: str, mode: str = "auto", cache: Optional[Path] = None):
        self.container_id = container_id
        self.mode = mode
        self.cache = Path(cache) if cache is not None else leaktrace_cache.root_dir() / "containers"
        self._checked = cache is not None  # the default's parents are checked once, on first use
        self.copies = 0  # docker cp runs so far
        self.unusable = ""  # why docker cannot be used, once known

    @property
    def first(self) -> bool:
        """Whether the copy comes before /proc (mode "always")."""
        return self.mode == "always"

    def check(self) -> None:
        """Raise CopyOutError now if docker or its daemon cannot be used."""
        try:
            done = docker_command("version", "--format", "{{.Server.Version}}")
        except LeaktraceError as exc:
            self.unusable = exc.message
            raise CopyOutError(exc.message, exc.hint) from None
        if done.returncode != 0:
            self.unusable = docker_failure(done.stderr)
            raise CopyOutError(self.unusable, hint="start dockerd")

    def binary(self, path: str, identity: str = "") -> str:
        """Host path of a private copy of the container's `path`."""
        index = self._index_path(path, identity)
        key = _read_text(index)
        if key:
            cached = self._slot(key) / "binary"
            if cached.is_file() and _key_of(cached) == key:
                return str(cached)
        copied = self._copy(path)
        try:
            key = _key_of(copied)
        except ElfError as exc:
            copied.unlink()
            raise CopyOutError(f"{path} copied out of container {self.container_id[:12]}: "
                               f"{exc.message}") from None
        stored = self._store(copied, key, "binary")
        _write_text(self._dir("index") / index.name, key)
        return str(stored)

    def debug_file(self, binary: ElfSymbols, path: str) -> Optional[ElfSymbols]:
        """The debug file of a stripped binary, from the cache or the container."""
        key = binary.build_id or (f"debuglink-{binary.debuglink[1]:08x}" if binary.debuglink else "")
        if not key:
            return None
        cached = self._slot(key) / "debug"
        if cached.is_file() and _matches(binary, str(cached)):
            return open_elf(str(cached))
        for candidate in self._debug_candidates(binary, path):
            try:
                copied = self._copy(candidate)
            except CopyOutError:
                if self.unusable:
                    raise
                continue  # not at this candidate path: try the next
            if _matches(binary, str(copied)):
                return open_elf(str(self._store(copied, key, "debug")))
            copied.unlink()
        return None

    @staticmethod
    def _debug_candidates(binary: ElfSymbols, path: str):
        if binary.build_id and len(binary.build_id) > 2:
            yield build_id_path(binary.build_id)
        if binary.debuglink:
            yield from debuglink_candidates(path, binary.debuglink[0])

    def _slot(self, key: str) -> Path:
        return self.cache / _path_part(self.container_id) / "build-id" / key[:2] / key[2:]

    def _dir(self, *parts: str) -> Path:
        """A private directory under the cache (the cache itself made private first)."""
        if not self._checked:
            if leaktrace_cache.directory("containers") is None:
                raise CopyOutError(f"no trusted cache directory for copies ({self.cache})",
                                   hint="see the warning above, or point LEAKTRACE_CACHE_DIR elsewhere")
            self._checked = True
        directory = private_dir(self.cache)
        for part in parts:
            directory = private_dir(directory / part)
        return directory

    def _index_path(self, path: str, identity: str) -> Path:
        digest = hashlib.sha256(f"{self.container_id}\0{path}\0{identity}".encode()).hexdigest()
        return self.cache / "index" / digest

    def _store(self, copied: Path, key: str, kind: str) -> Path:
        final = self._dir(*self._slot(key).relative_to(self.cache).parts) / kind
        os.replace(copied, final)
        return final

    def _copy(self, path: str) -> Path:
        """A regular file's bytes from the container, in a private temporary file."""
        if self.unusable:
            raise CopyOutError(self.unusable)
        for _ in range(MAX_LINK_HOPS):
            stream = self._docker_cp(path)
            try:
                target = self._extract(stream, path)
            finally:
                stream.unlink()
            if isinstance(target, Path):
                return target
            # A symlink: ask the container again; the daemon resolves it in there.
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        raise CopyOutError(f"too many symbolic links copying {path} out of the container")

    def _extract(self, stream: Path, path: str):
        """The regular file in a one-member tar stream (a Path), or a symlink's target."""
        try:
            with tarfile.open(stream, mode="r:") as tar:
                member = tar.next()
                if member is not None and member.issym():
                    return member.linkname
                if member is None or not member.isreg():
                    raise CopyOutError(f"{path} in the container is not a regular file")
                if member.size > MAX_COPY_BYTES:
                    raise CopyOutError(f"{path} in the container is too large ({member.size} bytes)")
                return self._write_private(tar.extractfile(member))
        except tarfile.TarError as exc:
            raise CopyOutError(f"docker cp {path}: unreadable archive ({exc})") from None

    def _write_private(self, source) -> Path:
        fd, name = tempfile.mkstemp(dir=self._dir("tmp"), prefix="copy-")
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                out.write(chunk)
        return Path(name)

    def _docker_cp(self, path: str) -> Path:
        """Run `docker cp CONTAINER:PATH -` into a private file, bounded in time and size."""
        docker = shutil.which("docker")
        if docker is None:
            self.unusable = "docker cp is unavailable: docker is not installed"
            raise CopyOutError(self.unusable)
        fd, name = tempfile.mkstemp(dir=self._dir("tmp"), prefix="tar-")
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryFile() as errors:
            self.copies += 1
            proc = subprocess.Popen([docker, "cp", f"{self.container_id}:{path}", "-"],
                                    stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
            too_big = _pump(proc, out)
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
        if proc.returncode != 0 or too_big:
            os.unlink(name)
            self._fail(path, stderr, too_big, proc.returncode)
        return Path(name)

    def _fail(self, path: str, stderr: str, too_big: bool, returncode: int) -> None:
        if too_big:
            raise CopyOutError(f"docker cp {path}: more than {MAX_COPY_BYTES} bytes")
        if returncode < 0:
            raise CopyOutError(f"docker cp {path}: no answer within {COPY_TIMEOUT_S}s")
        reason = docker_failure(stderr)
        if daemon_unreachable(stderr) or "No such container" in stderr:
            self.unusable = f"docker cp is unavailable: {reason}"
            raise CopyOutError(self.unusable)
        raise CopyOutError(f"docker cp {path}: {reason}")


def _pump(proc: subprocess.Popen, out) -> bool:
    """Copy proc's stdout to out until EOF, the size cap or the timeout (kills it).
    Returns True when the size cap was hit."""
    watchdog = threading.Timer(COPY_TIMEOUT_S, proc.kill)
    watchdog.start()
    total, too_big = 0, False
    try:
        for chunk in iter(lambda: proc.stdout.read(_CHUNK), b""):
            total += len(chunk)
            if total > MAX_COPY_BYTES + _CHUNK:
                too_big = True
                proc.kill()
                break
            out.write(chunk)
    finally:
        proc.stdout.close()
        proc.wait()
        watchdog.cancel()
    return too_big


def _key_of(path: Path) -> str:
    """The cache key of an ELF file: its build-id, else a hash of its bytes."""
    elf = open_elf(str(path))
    if elf.build_id:
        return elf.build_id
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return "sha256-" + digest.hexdigest()


def _matches(binary: ElfSymbols, candidate: str) -> bool:
    """A debug file belongs to binary: same build-id, else the debuglink CRC."""
    try:
        debug = open_elf(candidate)
    except ElfError:
        return False
    if binary.build_id:
        return debug.build_id == binary.build_id
    return binary.debuglink is not None and file_crc32(candidate) == binary.debuglink[1]


def _read_text(path: Path) -> str:
    return (leaktrace_cache.read_bytes(path) or b"").decode(errors="replace").strip()


def _write_text(path: Path, text: str) -> None:
    leaktrace_cache.write_bytes(path, text.encode())


def _path_part(container_id: str) -> str:
    """The container's directory name: its id when that is plain hex (Docker's)."""
    if all(c in "0123456789abcdef" for c in container_id) and 0 < len(container_id) <= 64:
        return container_id
    return hashlib.sha256(container_id.encode()).hexdigest()
