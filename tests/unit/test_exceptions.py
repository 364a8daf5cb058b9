"""Which hooks the throwing operator new keeps (probes/exceptions.py). No root."""
from leaktrace.probes.allocator import Hook
from leaktrace.probes.exceptions import choose

LIB = "/usr/lib/libjemalloc.so.2"
HOOKS = [Hook("malloc", "malloc", LIB), Hook("new", "_Znwm", LIB), Hook("new_nothrow", "_ZnwmRKSt9nothrow_t", LIB),
         Hook("new_aligned", "_ZnwmSt11align_val_t", LIB),
         Hook("raise_exception", "_Unwind_RaiseException", "/lib/libgcc_s.so.1")]


def symbols(hooks):
    return [hook.symbol for hook in hooks]


def test_a_kernel_that_puts_the_return_address_back_gets_every_hook():
    kept, note = choose(HOOKS, restorable=True, forced=False)
    assert kept == HOOKS and note is None


def test_without_it_the_throwing_new_is_left_alone_and_the_report_says_what_is_missed():
    kept, note = choose(HOOKS, restorable=False, forced=False)
    assert symbols(kept) == ["malloc", "_ZnwmRKSt9nothrow_t"]
    assert note.startswith("the throwing operator new (_Znwm, _ZnwmSt11align_val_t) is not hooked")
    assert "--probe-throwing-new" in note


def test_forced_it_is_hooked_and_the_risk_is_said():
    kept, note = choose(HOOKS, restorable=False, forced=True)
    assert symbols(kept) == ["malloc", "_Znwm", "_ZnwmRKSt9nothrow_t", "_ZnwmSt11align_val_t"]
    assert "terminates the program" in note


def test_nothing_throwing_nothing_to_say():
    plain = HOOKS[:1] + HOOKS[2:3]
    assert choose(plain, restorable=False, forced=False) == (plain, None)
