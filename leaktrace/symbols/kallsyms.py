"""Kernel addresses -> `function+0xoff [module]`, from /proc/kallsyms.

The file is read once (on first use) into a sorted array of text symbols;
each lookup is a bisect. An address belongs to the nearest symbol at or below
it, unless that is further than MAX_SYMBOL_SIZE away (a gap, or past the end
of a module's text): then the frame stays [unknown] rather than wrong.
When kallsyms hides addresses (kernel.kptr_restrict, not root) every address
reads 0, and `hidden` says so.
"""
from __future__ import annotations

import bisect
from typing import List, Optional, Tuple

from ..base.model import Frame, RawStack

KALLSYMS = "/proc/kallsyms"
TEXT_TYPES = frozenset("tTwW")
# Text and data: what a pointer stored in a kernel object may name.
POINTER_TYPES = TEXT_TYPES | frozenset("dDrRbB")
MAX_SYMBOL_SIZE = 1 << 20
KERNEL_MODULE = "kernel"


def parse_kallsyms(text: str, types: frozenset = TEXT_TYPES) -> Tuple[List[int], List[Tuple[str, str]]]:
    """(sorted addresses, (name, module) per address) of the symbols of these types."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in types:
            continue
        try:
            address = int(parts[0], 16)
        except ValueError:
            continue
        module = parts[3].strip("[]") if len(parts) > 3 else KERNEL_MODULE
        entries.append((address, parts[2], module))
    entries.sort(key=lambda entry: entry[0])
    return [e[0] for e in entries], [(e[1], e[2]) for e in entries]


def variable_address(name: str, path: str = KALLSYMS) -> Optional[int]:
    """Where the kernel variable `name` lives (kallsyms lists data symbols with
    CONFIG_KALLSYMS_ALL); None when absent or hidden (0: kptr_restrict)."""
    try:
        with open(path) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name and parts[1] in "dDbBrR":
                    return int(parts[0], 16) or None
    except (OSError, ValueError):
        return None
    return None


class KernelSymbols:
    def __init__(self, path: str = KALLSYMS, text: Optional[str] = None, types: frozenset = TEXT_TYPES):
        self.path = path
        self.types = types
        self._text = text
        self._addresses: Optional[List[int]] = None
        self._names: List[Tuple[str, str]] = []

    def _load(self) -> None:
        if self._addresses is not None:
            return
        text = self._text
        if text is None:
            try:
                with open(self.path) as handle:
                    text = handle.read()
            except OSError:
                text = ""
        self._addresses, self._names = parse_kallsyms(text, self.types)

    @property
    def hidden(self) -> bool:
        """True when no real address is visible (kptr_restrict, or no file)."""
        self._load()
        return not self._addresses or self._addresses[-1] == 0

    def lookup(self, address: int) -> Optional[Tuple[str, int, str]]:
        """(function, offset, module) or None."""
        self._load()
        index = bisect.bisect_right(self._addresses, address) - 1
        if index < 0 or self._addresses[index] == 0:
            return None
        offset = address - self._addresses[index]
        if offset >= MAX_SYMBOL_SIZE:
            return None
        name, module = self._names[index]
        return name, offset, module

    def address_of(self, name: str) -> Optional[int]:
        """Where the symbol `name` (of the loaded types) is, or None."""
        self._load()
        for address, (symbol, _) in zip(self._addresses, self._names):
            if symbol == name:
                return address
        return None

    def function_at(self, address: int) -> Optional[str]:
        """The function starting exactly at address, or None."""
        found = self.lookup(address)
        return found[0] if found and found[1] == 0 else None

    def name(self, address: int) -> Optional[str]:
        """`symbol` or `symbol+0xoff` (a module's in brackets after it), or None."""
        found = self.lookup(address)
        if found is None:
            return None
        name, offset, module = found
        text = f"{name}+0x{offset:x}" if offset else name
        return text if module == KERNEL_MODULE else f"{text} [{module}]"

    def frame(self, address: int) -> Frame:
        found = self.lookup(address)
        if found is None:
            return Frame(addr=address, module=KERNEL_MODULE, unwind="kernel")
        name, offset, module = found
        return Frame(addr=address, symbol=name, offset=offset, module=module, unwind="kernel")

    def symbolize(self, raw: RawStack) -> Tuple[Frame, ...]:
        return tuple(self.frame(address) for address in raw.addresses)

    def resolve(self, key, raw: RawStack) -> Tuple[Frame, ...]:
        """The report loop's resolver: (StackKey, RawStack) -> frames."""
        del key  # kernel stacks share one address space
        return self.symbolize(raw)
