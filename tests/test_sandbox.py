"""The sandbox: a child that crashes, loops, sleeps, eats memory or recurses is a plain message; the caller lives.

The functions the children run are module-level here (a child imports them by name).
"""
import ctypes
import os
import signal
import threading
import time

import pytest

from resviz.inputs import sandbox
from resviz.inputs.sandbox import Limits, SandboxError, run_isolated

QUICK = Limits(cpu_s=2, wall_s=30)


def add_one(x):
    return x + 1


def segfault(_):
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def spin(_):
    while True:
        pass


def sleep_after_writing_pid(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def eat_memory(_):
    return len(bytearray(8 * 2**30))  # 8 GiB, over the cap


def recurse(n):
    return recurse(n + 1)


def refuse(_):
    raise KeyError("something odd")


def not_json(_):
    return {1, 2}


def big_answer(n):
    return "x" * n


def alive_after(fn):
    """The caller still works: a good job right after a bad one."""
    assert run_isolated(add_one, 41, QUICK) == 42


def test_a_child_returns_its_result():
    assert run_isolated(add_one, 1, QUICK) == 2
    assert run_isolated(big_answer, 3, QUICK) == "xxx"


def test_a_segfault_is_a_plain_message_and_the_caller_lives():
    with pytest.raises(SandboxError, match=r"^This file could not be read safely: the reader crashed on it "
                                           r"\(segmentation fault\)"):
        run_isolated(segfault, None, QUICK)
    alive_after(segfault)


def test_a_loop_is_stopped_by_the_cpu_limit():
    t = time.monotonic()
    with pytest.raises(SandboxError, match="more than 1 s of computing time"):
        run_isolated(spin, None, Limits(cpu_s=1, wall_s=120))
    assert time.monotonic() - t < 120  # the CPU limit ended it, not the wall clock
    alive_after(spin)


def test_a_sleeper_is_killed_at_the_wall_clock_limit_and_leaves_no_process(tmp_path):
    pid_file = tmp_path / "pid"
    t = time.monotonic()
    with pytest.raises(SandboxError, match="took longer than 3 s"):
        run_isolated(sleep_after_writing_pid, str(pid_file), Limits(cpu_s=5, wall_s=3))
    assert time.monotonic() - t < 60
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped before run_isolated returned
        os.kill(pid, 0)
    alive_after(sleep_after_writing_pid)


def test_memory_past_the_cap_is_a_plain_message():
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("RLIMIT_AS is set only where the address space can be read (Linux)")
    with pytest.raises(SandboxError, match="needs more than 256 MB of memory"):
        run_isolated(eat_memory, None, Limits(memory_mb=256, wall_s=30))
    alive_after(eat_memory)


@pytest.mark.parametrize("fn, words", [
    (recurse, "nested too deeply \\(more than 1,000 levels\\)"),
    (refuse, "reading it failed \\(KeyError\\)"),
    (not_json, "reading it failed \\(TypeError\\)"),
])
def test_any_exception_in_the_child_is_a_plain_message(fn, words):
    with pytest.raises(SandboxError, match=words):
        run_isolated(fn, 0, QUICK)


def test_an_oversized_answer_is_refused():
    with pytest.raises(SandboxError, match="could not be read safely"):
        run_isolated(big_answer, 2 * 2**20, Limits(answer_mb=1, wall_s=30))
    alive_after(big_answer)


def test_several_callers_at_once_each_get_their_own_answer():
    results, errors = {}, []

    def call(i):
        try:
            results[i] = run_isolated(add_one, i, QUICK) if i % 2 else None
            if not i % 2:
                run_isolated(segfault, None, QUICK)
        except SandboxError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: results[i] for i in (1, 3, 5)} == {1: 2, 3: 4, 5: 6}
    assert len(errors) == 3 and all("segmentation fault" in e for e in errors)


def test_the_zygote_ends_with_its_server_and_a_dead_one_is_replaced():
    run_isolated(add_one, 0, QUICK)
    zygote = sandbox._zygote
    zygote.control.close()  # what the zygote sees when the server process ends
    zygote.proc.wait(timeout=60)
    assert run_isolated(add_one, 1, QUICK) == 2
    assert sandbox._zygote is not zygote and sandbox._zygote.alive()
    os.kill(sandbox._zygote.proc.pid, signal.SIGKILL)  # a zygote that dies (the OOM killer) is replaced
    sandbox._zygote.proc.wait(timeout=60)
    assert run_isolated(add_one, 2, QUICK) == 3


def test_signal_names_are_plain_words():
    assert "segmentation fault" in sandbox._death(str(-signal.SIGSEGV), QUICK)
    assert "abort" in sandbox._death(str(-signal.SIGABRT), QUICK)
    assert "computing time" in sandbox._death(str(-signal.SIGXCPU), QUICK)
    assert "took longer" in sandbox._death("T", QUICK)
    assert "vanished" in sandbox._death("?", QUICK)


def test_workers_end_with_their_zygote(tmp_path):
    pid_file, outcome = tmp_path / "pid", []

    def sleeper():
        try:
            run_isolated(sleep_after_writing_pid, str(pid_file), Limits(cpu_s=5, wall_s=300))
        except SandboxError as e:
            outcome.append(str(e))

    caller = threading.Thread(target=sleeper)
    caller.start()
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the worker's pid file: the condition is the worker running
    pid = int(pid_file.read_text())
    sandbox._zygote.control.close()  # the server ends
    caller.join(timeout=120)
    assert outcome and "could not be read safely" in outcome[0]
    with pytest.raises(ProcessLookupError):  # killed and reaped with its zygote, not left sleeping for 300 s
        os.kill(pid, 0)
    alive_after(sleeper)
