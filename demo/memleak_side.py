"""bcc's memleak beside leaktrace, for scripts/demo.sh.

  memleak_side.py run MEMLEAK PID SECONDS     run memleak on PID for SECONDS (one report)
  memleak_side.py show OUTPUT                 the stack holding the most, as memleak printed it
  memleak_side.py differ OUTPUT REPORTS       one line: how leaktrace's final report differs

`run` replaces itself with memleak (`-p PID -o OLDER_THAN_MS SECONDS 1`), so
the demo can stop it by its PID, and points bcc at the kernel headers
leaktrace compiles against (memleak alone finds none on a kernel without a
headers package). `show` and `differ` only read files: OUTPUT is what memleak
printed, REPORTS the JSON lines of `leaktrace attach --format json`. Nothing
is made up: when memleak printed no stack, both say so and point at OUTPUT.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from leaktrace.base.errors import LeaktraceError
from leaktrace.probes.headers import ensure_kernel_source

OLDER_THAN_MS = 500  # the same age filter the demo gives leaktrace
_REPORT_START = re.compile(r"^\[[\d:]+\] Top \d+ stacks with outstanding allocations:")
_STACK_START = re.compile(r"^\s+(?P<bytes>\d+) bytes in (?P<count>\d+) allocations from stack")
# bcc 0.26: "0x00005626b0b3e203\tfibonacci+0x1a [app]"; older bcc prints no address.
_FRAME = re.compile(r"^\t\t(?:0x[0-9a-f]+\s+)?(?P<symbol>\S+?)(?:\+0x[0-9a-f]+)?(?: \[(?P<module>.*)\])?$")


@dataclass
class MemleakStack:
    bytes: int
    count: int
    lines: List[str]  # as memleak printed them
    symbols: List[str]  # "[unknown]" where memleak had no name


def parse_last_report(text: str) -> List[MemleakStack]:
    """The stacks of memleak's last report, in the order it printed them."""
    stacks: List[MemleakStack] = []
    for line in text.splitlines():
        if _REPORT_START.match(line):
            stacks = []
        elif _STACK_START.match(line):
            start = _STACK_START.match(line)
            stacks.append(MemleakStack(int(start["bytes"]), int(start["count"]), [line], []))
        elif stacks and line.startswith("\t\t"):
            frame = _FRAME.match(line)
            stacks[-1].lines.append(line)
            stacks[-1].symbols.append(frame["symbol"] if frame else "[unknown]")
    return stacks


def top_stack(text: str) -> Optional[MemleakStack]:
    """The stack holding the most bytes (memleak prints the biggest last)."""
    return max(parse_last_report(text), key=lambda s: s.bytes, default=None)


def leaktrace_top(reports_path: Path) -> Dict:
    lines = [line for line in reports_path.read_text().splitlines() if line.strip()]
    final = json.loads(lines[-1])
    stack = final["stacks"][0] if final["stacks"] else {"frames": [], "verdict": "", "growth_bps": 0}
    return {"stack": stack, "container": final["targets"][0].get("container")}


def _chain(symbols: Sequence[str]) -> str:
    return " <- ".join(symbols) if symbols else "no frame"


def _frames(count: int) -> str:
    return f"{count} frame{'' if count == 1 else 's'}"


def differences(memleak: Optional[MemleakStack], leaktrace: Dict) -> str:
    """One line: frames, [unknown] symbols, container and verdict, memleak vs leaktrace."""
    stack = leaktrace["stack"]
    names = [f.get("symbol") or "[unknown]" for f in stack["frames"]]
    unwound = [f.get("symbol") or "[unknown]" for f in stack["frames"][1:] if f.get("unwind") == "cfi"]
    theirs = memleak.symbols if memleak else []
    frames = f"frames: memleak {_frames(len(theirs))} ({_chain(theirs)}), leaktrace {_frames(len(names))} ({_chain(names)})"
    if unwound:
        frames += f"; {', '.join(unwound)} found through .eh_frame, where a frame-pointer walk stops"
    unknown = (f"[unknown] symbols: memleak {theirs.count('[unknown]')}, "
               f"leaktrace {names.count('[unknown]')}")
    box = leaktrace["container"]
    named = f"{box['runtime']} {box.get('name') or box['id'][:12]}" if box else "none (a plain process)"
    container = f"container: memleak names none, leaktrace {named}"
    verdict = "verdict: memleak gives none, leaktrace "
    if stack.get("verdict"):
        verdict += f"{stack['verdict']} at {stack.get('growth_bps', 0) / 1024:+.1f} KiB/s"
    else:
        verdict += "none (no stack)"
    return "what differs: " + "; ".join((frames, unknown, container, verdict))


def show(text: str, stack: Optional[MemleakStack], output: Path) -> str:
    if stack is None:
        last = "\n".join(text.splitlines()[-5:]) or "(nothing)"
        return f"memleak printed no stack; its last lines (all of them in {output}):\n{last}"
    shown = len(parse_last_report(text))
    return f"top stack of {shown}, as memleak printed it:\n" + "\n".join(stack.lines)


def run(memleak: str, pid: int, seconds: int) -> None:
    try:
        ensure_kernel_source(announce=lambda _: None)  # sets BCC_KERNEL_SOURCE when needed
    except LeaktraceError:
        pass  # memleak then says for itself that it has no headers
    os.environ["PYTHONUNBUFFERED"] = "1"  # its lines reach the file as it prints them
    os.execv(memleak, [memleak, "-p", str(pid), "-o", str(OLDER_THAN_MS), str(seconds), "1"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run")
    run_cmd.add_argument("memleak")
    run_cmd.add_argument("pid", type=int)
    run_cmd.add_argument("seconds", type=int)
    commands.add_parser("show").add_argument("output", type=Path)
    differ = commands.add_parser("differ")
    differ.add_argument("output", type=Path)
    differ.add_argument("reports", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.memleak, args.pid, args.seconds)
    text = args.output.read_text(errors="replace")
    stack = top_stack(text)
    if args.command == "show":
        print(show(text, stack, args.output))
        return 0
    print(differences(stack, leaktrace_top(args.reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
