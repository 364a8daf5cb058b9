"""Every name a frame goes by comes from model.Frame: the printed stack
(label), the graphs (name) and diffs (key) agree on symbols, unknown frames
and placeholders."""
import pytest

from leaktrace.judge.compare import stack_signature
from leaktrace.base.model import Frame, ReportRow
from leaktrace.report.frames import root_first

SYMBOL = Frame(addr=0x401136, symbol="fibonacci", offset=0x1f, module="/app/fib", file="fib.c", line=5)
UNKNOWN = Frame(addr=0x7F00DEAD, module="/usr/lib/libfoo.so.1")
NOWHERE = Frame(addr=0x10, note="outside every mapping")
PLACEHOLDER = Frame(addr=0, note="stack not collected")


@pytest.mark.parametrize("frame, label, name, key", [
    (SYMBOL, "fibonacci+0x1f (fib.c:5) [fib]", "fibonacci", "fibonacci+0x1f"),
    (UNKNOWN, "[unknown] 0x7f00dead [libfoo.so.1]", "[unknown] libfoo.so.1", "[unknown] libfoo.so.1"),
    (NOWHERE, "[unknown] 0x10 [unknown module]", "[unknown] unknown module", "[unknown] unknown module"),
    (PLACEHOLDER, "[unknown] 0x0 [unknown module]", "[stack not collected]", "[stack not collected]"),
])
def test_each_name_of_a_frame(frame, label, name, key):
    assert (frame.label(), frame.name(), frame.key()) == (label, name, key)


def test_graphs_and_diffs_use_those_names():
    row = ReportRow(rank=1, bytes=1, count=1, oldest_s=1.0, frames=(SYMBOL, UNKNOWN, PLACEHOLDER))
    assert root_first(row) == ("[stack not collected]", "[unknown] libfoo.so.1", "fibonacci")
    assert stack_signature(row)[2] == ("fibonacci+0x1f", "[unknown] libfoo.so.1", "[stack not collected]")
