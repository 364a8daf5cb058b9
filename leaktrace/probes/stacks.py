"""Raw stacks read from the kernel's stack maps, each once.

A stored stack never changes: the kernel's stack map and the unwound-stack
map give an id to one content and never overwrite it (a different stack
with a colliding id is refused). So a stack read once serves every later
report; only new ids cost a map lookup.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

from ..base.model import RawStack, StackKey


class StackCache:
    def __init__(self, read_one: Callable[[StackKey], Optional[RawStack]]):
        self.read_one = read_one  # None when the map has no such stack
        self.known: Dict[StackKey, RawStack] = {}

    def read(self, keys: Iterable[StackKey]) -> Dict[StackKey, RawStack]:
        wanted = {key for key in keys if key.stack_id >= 0}
        for key in wanted - self.known.keys():
            raw = self.read_one(key)
            if raw is not None:
                self.known[key] = raw
        return {key: self.known[key] for key in wanted if key in self.known}
