"""--follow-forks bookkeeping (leaktrace/probes/followed.py) over a table
shaped like bcc's view of the `images` map."""
from types import SimpleNamespace

from leaktrace.base.model import Target
from leaktrace.probes.followed import IMAGE_EXECED, IMAGE_EXITED, ForkedChildren


class Images(dict):
    """pid -> image, with bcc's Key and items() of (key, leaf)."""

    Key = staticmethod(lambda pid: pid)

    def items(self):
        return [(SimpleNamespace(value=pid), image) for pid, image in dict.items(self)]


def image(parent=0, state=0):
    return SimpleNamespace(parent=parent, state=state, generation=0, exec_ns=0)


def test_children_are_taken_in_once_and_exited_ones_leave_the_map_but_not_the_report():
    table = Images({10: image(), 11: image(10), 12: image(11, IMAGE_EXITED)})
    forks = ForkedChildren()
    assert sorted(forks.read(table)) == [11, 12]
    assert forks.read(table) == []
    forks.prune(table)
    assert sorted(table) == [10, 11]
    named = (Target(pid=10, comm="server", exe="/srv/server", allocator="/lib/libc.so.6", allocator_name="glibc"),)
    children = forks.targets(named)
    assert [(t.pid, t.forked_from, t.allocator_name) for t in children] == [(11, 10, "glibc"), (12, 11, "glibc")]
    assert forks.summary(1) == "following forks: processes traced now 2, in all 3 (1 named, 2 forked; 1 exited)"


def test_a_child_that_execed_is_named_as_not_followed():
    table = Images({10: image(), 11: image(10, IMAGE_EXECED)})
    forks = ForkedChildren()
    forks.read(table)
    assert not forks.is_followed(11) and not forks.is_followed(99)
    summary = forks.summary(1)
    assert summary.startswith("following forks: processes traced now 1, in all 2")
    assert "1 forked children exec'd another program and were not followed after it (pid 11" in summary


def test_a_pid_reused_by_a_new_child_of_another_parent_is_a_new_child():
    table = Images({11: image(10, IMAGE_EXITED)})
    forks = ForkedChildren()
    forks.read(table)
    table[11] = image(20)
    assert forks.read(table) == [11]
    assert forks.children[11].parent == 20 and not forks.children[11].exited
