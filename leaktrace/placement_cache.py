"""Placement decisions kept on disk between runs.

Indexing every branch of libc for placement.place_probe takes about half a
second, a third of a warm attach; the answer only changes with the file, the
kernel's emulation (its major.minor) or the placement rules. So answers are
stored per file version (device, inode, size, mtime) under the cache directory
(LEAKTRACE_CACHE_DIR, else $XDG_CACHE_HOME/leaktrace), in a JSON file whose name
also hashes the rules' own source, so an upgraded leaktrace never reuses an old
decision. Cache trouble (read-only home, torn or foreign file) only costs a
recomputation.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import code_index, placement
from .placement import MAX_SKIP_BYTES, Placement, kernel_version, place_probe
from .unwind.tables import cache_dir as unwind_cache_dir

_rules_digest: Optional[str] = None


def cache_dir() -> Path:
    return unwind_cache_dir().parent / "placement"


def _rules() -> str:
    """A digest of the code that decides placements."""
    global _rules_digest
    if _rules_digest is None:
        digest = hashlib.sha256()
        for module in (placement, code_index):
            digest.update(Path(module.__file__).read_bytes())
        _rules_digest = digest.hexdigest()
    return _rules_digest


def cache_file(elf_path: str) -> Path:
    """Where the decisions for this version of the file live (raises OSError)."""
    info = os.stat(elf_path)
    identity = f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{kernel_version()}:{_rules()}"
    return cache_dir() / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".json")


def _read(file: Path) -> Dict[str, Tuple[int, str]]:
    try:
        stored = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    # Only well-formed entries: an offset outside the window would split an instruction.
    return {key: (value[0], value[1]) for key, value in stored.items()
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
            and 0 <= value[0] <= MAX_SKIP_BYTES and isinstance(value[1], str)}


def _write(file: Path, decisions: Dict[str, Tuple[int, str]]) -> None:
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=file.parent, delete=False) as out:
            json.dump({key: list(value) for key, value in decisions.items()}, out)
        os.replace(out.name, file)
    except OSError:
        pass


def placement_for(elf_path: str, func_name: str, arg_regs: Tuple[str, ...]) -> Placement:
    """place_probe for this kernel, answered from the cache when this file
    version was seen before. Raises what place_probe raises."""
    try:
        file = cache_file(elf_path)
    except OSError:
        return place_probe(elf_path, func_name, arg_regs)
    key = f"{func_name} {','.join(arg_regs)}"
    decisions = _read(file)
    if key in decisions:
        return Placement(*decisions[key])
    decided = place_probe(elf_path, func_name, arg_regs)
    decisions[key] = (decided.offset, decided.reason)
    _write(file, decisions)
    return decided
