"""The seccomp / uretprobe-syscall hazard of 6.11-era kernels: the decision
from the two probe calls, the targets' seccomp modes, and the refusal."""
import pytest

from leaktrace.base.errors import EX_UNAVAILABLE, EnvironmentProblem
from leaktrace.probes import uretprobe


@pytest.mark.parametrize("direct, filtered, verdict", [
    ("enosys", "marker", "absent"),  # before 6.11: the filter answers, the syscall does not exist
    ("sigill", "sigill", "passthrough"),  # fixed: seccomp skips the uretprobe syscall
    ("sigill", "marker", "filtered"),  # 6.11 to the fix: the filter sees it
    ("other", "marker", "unknown"), ("sigill", "other", "unknown"),
])
def test_kernel_behaviour_from_the_two_calls(direct, filtered, verdict):
    assert uretprobe.classify(direct, filtered) == verdict


def test_this_kernel_answers_one_of_the_known_ways():
    assert uretprobe.kernel_behaviour() in ("absent", "passthrough", "filtered")


def proc_tree(tmp_path, modes):
    for tid, mode in modes.items():
        task = tmp_path / "42" / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "status").write_text(f"Name:\tsvc\nSeccomp:\t{mode}\nSeccomp_filters:\t1\n")
    return str(tmp_path)


def test_any_thread_under_a_filter_counts(tmp_path):
    assert uretprobe.seccomp_filtered(42, proc_tree(tmp_path / "a", {42: 0, 43: 2})) is True
    assert uretprobe.seccomp_filtered(42, proc_tree(tmp_path / "b", {42: 0, 43: 1})) is False
    assert uretprobe.seccomp_filtered(42, str(tmp_path / "none")) is None


def test_a_filtered_target_on_an_affected_kernel_is_refused_in_one_line():
    with pytest.raises(EnvironmentProblem) as caught:
        uretprobe.check_targets([7, 8], behaviour=lambda: "filtered", filtered=lambda pid: pid == 8)
    assert caught.value.exit_code == EX_UNAVAILABLE
    assert "process 8 has a seccomp filter" in caught.value.message and "\n" not in caught.value.message
    assert "335" in caught.value.hint


@pytest.mark.parametrize("behaviour", ["absent", "passthrough", "unknown"])
def test_other_kernels_trace_filtered_targets(behaviour):
    uretprobe.check_targets([8], behaviour=lambda: behaviour, filtered=lambda pid: True)


def test_the_kernel_is_not_probed_without_a_filtered_target():
    def behaviour():
        raise AssertionError("probed for nothing")
    uretprobe.check_targets([7], behaviour=behaviour, filtered=lambda pid: False)
