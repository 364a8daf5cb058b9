"""ExecWatch: what the report does with a traced process that exec'd; no root.
The BPF map `images` is stood in for by a dict with the map's key and value
types (tests/integration/test_exec.py runs the real thing)."""
from dataclasses import dataclass

from leaktrace.base.model import Target
from leaktrace.probes.execs import ExecWatch

S = 1_000_000_000


@dataclass
class Image:
    generation: int = 0
    exec_ns: int = 0


class Images(dict):
    Key = int
    Leaf = Image


def test_an_exec_is_noticed_named_and_its_drops_counted():
    images, watch = Images(), ExecWatch()
    watch.watch(images, 4242)  # a pid that does not exist: names come out empty
    assert images == {4242: Image()}
    watch.read(images, started_ns=100 * S)
    assert watch.notes() == () and not watch.replaced(4242, 0)
    images[4242] = Image(generation=1, exec_ns=112 * S)
    watch.read(images, started_ns=100 * S)
    assert watch.replaced(4242, 0) and not watch.replaced(4242, 1)
    watch.count_dropped({(4242, 7, 0, 0): (100_000, 50), (4242, 8, 0, 0): (2_400, 2)})
    (note,) = watch.notes()
    assert note.startswith("PID 4242 exec'd 12.0 s into tracing") and "in 52 allocations" in note
    before = Target(pid=4242, comm="first", exe="/bin/first")
    assert watch.current(before) == before  # no name read: the old one stays
    assert watch.current(Target(pid=1, comm="init")) == Target(pid=1, comm="init")


def test_generations_compare_as_the_16_bits_the_totals_key_keeps():
    images, watch = Images(), ExecWatch()
    watch.watch(images, 7)
    images[7] = Image(generation=65536 + 3, exec_ns=S)
    watch.read(images, started_ns=0)
    assert not watch.replaced(7, 3) and watch.replaced(7, 2)
    assert watch.notes()[0].startswith("PID 7 exec'd 65539 times, last 1.0 s into tracing")


def test_unwatched_pids_are_never_replaced():
    assert not ExecWatch().replaced(99, 5)
