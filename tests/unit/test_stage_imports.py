"""No module imports from a later stage of the pipeline, nor from a renderer.

Data flows one way: probes -> BPF maps -> snapshot -> aggregate -> judge ->
build the report (symbolize) -> record / render; the loop and the commands
sit on top. STAGES declares which package or module belongs to which stage;
the test parses every module under leaktrace/ (imports at any depth,
function-local ones too) and fails on an import that points at a later
stage, so the picture stays true as code is added. A module missing from
STAGES fails too: a new one must be given its place.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional, Tuple

PACKAGE = Path(__file__).resolve().parents[2] / "leaktrace"

# Earliest first. A name is a top-level module or package of leaktrace;
# "pkg.mod" places one module of a package apart from the rest of it.
STAGES = (
    # What every stage may use: types, settings, errors, units, caches (base),
    # the one object a traced process is read through (process), and the
    # libraries that read processes and files (ELF, maps, CFI, /proc).
    ("foundation", ("__init__", "base", "process", "symbols", "unwind", "triage.procfs")),
    # What goes into the kernel (which functions of which objects, the programs,
    # placements, unwind tables) and reading the maps back.
    ("probes", ("probes",)),
    ("aggregate", ("aggregate",)),
    ("judge", ("judge",)),
    ("build", ("symbolize",)),
    ("render", ("report",)),
    ("loop", ("session", "triage")),
    # The agent drives whole traces the way the commands do.
    ("commands", ("commands", "cli", "__main__", "agent")),
)
RENDER = STAGES.index(next(s for s in STAGES if s[0] == "render"))


def stage_of(dotted: str) -> Optional[int]:
    """The stage of leaktrace.<dotted>: the longest declared prefix wins."""
    best: Tuple[int, int] = (-1, -1)
    for index, (_, names) in enumerate(STAGES):
        for name in names:
            if dotted == name or dotted.startswith(name + "."):
                best = max(best, (len(name), index))
    return best[1] if best[0] >= 0 else None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imported(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, leaktrace.<name>) of every leaktrace module path imports."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("leaktrace."):
                    yield node.lineno, alias.name[len("leaktrace."):]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
            elif node.module and node.module.startswith("leaktrace"):
                base, node_module = [], node.module.split(".")[1:]
                yield from ((node.lineno, ".".join(node_module + [a.name])) for a in node.names)
                continue
            else:
                continue
            module = base + (node.module.split(".") if node.module else [])
            for alias in node.names:
                yield node.lineno, ".".join(module + [alias.name])


def modules() -> Iterator[Path]:
    return (p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts)


def test_every_module_has_a_stage():
    missing = [module_name(p) for p in modules() if stage_of(module_name(p)) is None]
    assert not missing, f"give these a place in STAGES: {missing}"


def test_no_module_imports_a_later_stage_or_a_renderer():
    wrong = []
    for path in modules():
        mine = stage_of(module_name(path))
        for line, name in imported(path):
            theirs = stage_of(name)
            if theirs is None or mine is None:
                continue
            if theirs > mine or (theirs == RENDER and mine < RENDER):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({STAGES[mine][0]}) imports "
                             f"{name} ({STAGES[theirs][0]})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_imports_of_every_form():
    """The parser finds absolute, relative and function-local imports."""
    found = {name for _, name in imported(PACKAGE / "session.py")}
    assert {"judge.judgement.judge_interval", "symbolize.build_report", "judge.growth.GrowthTracker"} <= found
    found = {name for _, name in imported(PACKAGE / "commands" / "options.py")}
    assert "judge.reach.scan.Scanner" in found  # imported inside a function
    assert stage_of("report.table") == RENDER and stage_of("triage.procfs") == 0
