"""tcomp.timing: the functions compared run in turns after one warm-up call each; rounds, time and round limits;
CUDA-style synchronisation around every timed call; the statistic asked for; no gradients for single calls."""
import torch

from tcomp.timing import fastest_time, in_turns, median_time, samples_in_turns, sync_for


def _recorder(calls, name):
    return lambda: calls.append(name)


def test_functions_run_in_turns_after_one_warm_up_each():
    calls = []
    samples = samples_in_turns({"a": _recorder(calls, "a"), "b": _recorder(calls, "b")}, rounds=3, per_round=2)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert {k: len(v) for k, v in samples.items()} == {"a": 6, "b": 6}


def test_min_seconds_adds_rounds_up_to_max_rounds(monkeypatch):
    clock = [0.0]  # a call takes one second of a fake clock, whatever the machine's load
    monkeypatch.setattr("tcomp.timing.time.perf_counter", lambda: clock[0])

    def one_second():
        clock[0] += 1.0

    assert len(samples_in_turns({"a": one_second}, rounds=1, max_rounds=10, min_seconds=2.5)["a"]) == 3
    assert len(samples_in_turns({"a": one_second}, rounds=1, max_rounds=2, min_seconds=10.0)["a"]) == 2
    assert len(samples_in_turns({"a": one_second}, rounds=4, max_rounds=10, min_seconds=0.5)["a"]) == 4
    assert samples_in_turns({"a": one_second}, rounds=2)["a"] == [1.0, 1.0]


def test_sync_brackets_every_timed_call():
    events = []
    samples_in_turns({"a": lambda: events.append("call")}, rounds=2, sync=lambda: events.append("sync"),
                     warm_up=False)
    assert events == ["sync", "call", "sync"] * 2


def test_the_statistic_is_the_one_asked_for(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("tcomp.timing.time.perf_counter", lambda: clock[0])
    durations = iter([0.0, 3.0, 1.0, 2.0] * 2)  # the first of each four is the warm-up

    def fn():
        clock[0] += next(durations)

    assert in_turns({"a": fn}, rounds=3, max_rounds=3, statistic=min)["a"] == 1.0
    assert in_turns({"a": fn}, rounds=3, max_rounds=3)["a"] == 2.0


def test_single_calls_are_timed_without_gradients():
    seen = []
    x = torch.ones(2, requires_grad=True)

    def fn(t):
        seen.append(torch.is_grad_enabled())
        return t * 2

    assert fastest_time(fn, (x,), repeats=3) >= 0 and median_time(fn, (x,), repeats=3) >= 0
    assert seen == [False] * 8  # a warm-up and three timed calls, twice


def test_cuda_inputs_are_synchronised_cpu_inputs_are_not():
    assert sync_for([torch.ones(2), 3]) is None
    if torch.cuda.is_available():
        assert sync_for([torch.ones(2), torch.ones(2, device="cuda")]) is torch.cuda.synchronize
