"""tcomp.timing: the functions compared run in turns after one warm-up call each; rounds, time and round limits;
CUDA-style synchronisation around every timed call; the statistic asked for; no gradients for single calls."""
import time

import torch

from tcomp.timing import fastest_time, in_turns, median_time, samples_in_turns


def _recorder(calls, name, seconds=0.0):
    def fn():
        calls.append(name)
        if seconds:
            time.sleep(seconds)
    return fn


def test_functions_run_in_turns_after_one_warm_up_each():
    calls = []
    samples = samples_in_turns({"a": _recorder(calls, "a"), "b": _recorder(calls, "b")}, rounds=3, per_round=2)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert {k: len(v) for k, v in samples.items()} == {"a": 6, "b": 6}


def test_min_seconds_adds_rounds_up_to_max_rounds():
    calls = []
    samples = samples_in_turns({"a": _recorder(calls, "a", 0.01)}, rounds=1, max_rounds=4, min_seconds=0.025,
                               warm_up=False)
    assert 3 <= len(samples["a"]) <= 4  # 1 round is not 0.025 s; 4 rounds is the limit
    samples = samples_in_turns({"a": _recorder(calls, "a", 0.01)}, rounds=1, max_rounds=2, min_seconds=10.0,
                               warm_up=False)
    assert len(samples["a"]) == 2


def test_sync_brackets_every_timed_call():
    events = []
    samples_in_turns({"a": lambda: events.append("call")}, rounds=2, sync=lambda: events.append("sync"),
                     warm_up=False)
    assert events == ["sync", "call", "sync"] * 2


def test_the_statistic_is_the_one_asked_for():
    durations = iter([0.0, 0.03, 0.001, 0.02])  # the first is the warm-up
    fns = {"a": lambda: time.sleep(next(durations))}
    assert in_turns(fns, rounds=3, max_rounds=3, statistic=min)["a"] < 0.01


def test_single_calls_are_timed_without_gradients():
    seen = []
    x = torch.ones(2, requires_grad=True)

    def fn(t):
        seen.append(torch.is_grad_enabled())
        return t * 2

    assert fastest_time(fn, (x,), repeats=3) >= 0 and median_time(fn, (x,), repeats=3) >= 0
    assert seen == [False] * 8  # a warm-up and three timed calls, twice
