"""Placement decisions kept on disk between runs.

Indexing every branch of libc for placement.place_probe takes about half a
second, a third of a warm attach; the answer only changes with the file, the
kernel's emulation (its major.minor) or the placement rules. So answers are
stored per file version (device, inode, size, mtime) in the cache's
placement/ directory (leaktrace/base/cache.py: a directory only this user can
write), in a JSON file whose name also hashes the rules' own source, so an
upgraded leaktrace never reuses an old decision.

A remembered offset is still never trusted: before it is used, the
function's bytes are read from the file as it is now and the offset must be
the entry or exactly the one choose_offset finds in them (placement.confirmed),
so a planted or stale entry can never put a probe inside an instruction.
Cache trouble (read-only home, torn, foreign or wrong file) only costs a
recomputation.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

from elftools.common.exceptions import ELFError

from ..base import cache
from . import code_index, placement
from .code_index import function_code
from .placement import MAX_SKIP_BYTES, Placement, confirmed, kernel_version, place_probe

_rules_digest: Optional[str] = None


def _rules() -> str:
    """A digest of the code that decides placements."""
    global _rules_digest
    if _rules_digest is None:
        digest = hashlib.sha256()
        for module in (placement, code_index):
            digest.update(Path(module.__file__).read_bytes())
        _rules_digest = digest.hexdigest()
    return _rules_digest


def cache_file(elf_path: str) -> Optional[Path]:
    """Where the decisions for this version of the file live; None without a
    trusted cache directory (raises OSError when the file cannot be read)."""
    info = os.stat(elf_path)
    identity = f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{kernel_version()}:{_rules()}"
    directory = cache.directory("placement")
    if directory is None:
        return None
    return directory / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".json")


def _read(file: Path) -> Dict[str, Tuple[int, str]]:
    try:
        stored = json.loads(cache.read_bytes(file) or b"{}")
    except ValueError:
        return {}
    if not isinstance(stored, dict):
        return {}
    return {key: (value[0], value[1]) for key, value in stored.items()
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
            and 0 <= value[0] <= MAX_SKIP_BYTES and isinstance(value[1], str)}


def _still_right(elf_path: str, func_name: str, arg_regs: Tuple[str, ...], offset: int) -> bool:
    """placement.confirmed on the function's bytes as they are now."""
    if offset == 0:
        return True
    try:
        found = function_code(elf_path, func_name)
    except (OSError, ELFError):
        return False
    return found is not None and confirmed(offset, found[1], found[0], arg_regs)


def placement_for(elf_path: str, func_name: str, arg_regs: Tuple[str, ...]) -> Placement:
    """place_probe for this kernel, answered from the cache when this file
    version was seen before and the answer still holds. Raises what place_probe raises."""
    try:
        file = cache_file(elf_path)
    except OSError:
        file = None
    if file is None:
        return place_probe(elf_path, func_name, arg_regs)
    key = f"{func_name} {','.join(arg_regs)}"
    decisions = _read(file)
    if key in decisions and _still_right(elf_path, func_name, arg_regs, decisions[key][0]):
        return Placement(*decisions[key])
    decided = place_probe(elf_path, func_name, arg_regs)
    decisions[key] = (decided.offset, decided.reason)
    cache.write_bytes(file, json.dumps({k: list(v) for k, v in decisions.items()}).encode())
    return decided
