"""Option measurements (time, sensitivity) persist on disk, keyed by the model's weights, the calibration data,
the metric and the machine: a second process compiling the same model with the same data measures no option again
and selects the same options; anything else that changes measures afresh."""
import copy

import pytest
import torch
import torch.nn as nn
from test_select import _batches, _flop_time, deterministic_layer_times

import tcomp
from tcomp.approx.measurements import Measurements, content_digest
from tcomp.cache import DiskCache


class Small(nn.Module):
    def __init__(self, d=256, rank=8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, 10)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(d, rank, generator=g) @ torch.randn(rank, d, generator=g) / d ** 0.5)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _new_process():
    """What a new process starts with: no in-process results, no open cache tables."""
    Measurements._recent.clear()
    DiskCache._open.clear()


def _compile(model, cal, calls):
    def counted(ops, batch, training=False, repeats=9):
        calls.append(len(ops))
        return _flop_time(ops, batch, training, repeats)

    with pytest.MonkeyPatch.context() as mp:
        deterministic_layer_times(mp, counted)
        c = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("svd",))
    select = next(p for p in c.report.passes if p.name == "select")
    return {r["site"]: r["chosen"] for r in select.details["layers"]}


def test_a_second_process_measures_no_option_again_and_chooses_the_same():
    model, cal = Small().eval(), _batches(4, 64, 256)
    _new_process()
    first_calls, second_calls = [], []
    first = _compile(model, cal, first_calls)
    _new_process()
    second = _compile(copy.deepcopy(model), [t.clone() for t in cal], second_calls)  # equal values, new tensors
    assert first == second and any(c != "dense" for c in first.values())
    dense_sites = len(first)
    assert len(first_calls) > dense_sites  # the first compile timed the options too
    assert len(second_calls) == dense_sites  # the second only the dense layers it compares against


def test_the_digest_follows_weights_data_and_metric():
    model, cal = Small().eval(), [(t,) for t in _batches(2, 8, 256)]
    base = content_digest(model, "program", cal, "cosine")
    assert content_digest(copy.deepcopy(model), "program", [(t.clone(),) for (t,) in cal], "cosine") == base
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc2.bias[0] += 1e-3
    assert content_digest(other, "program", cal, "cosine") != base
    assert content_digest(model, "program", cal, "relative_l2") != base
    assert content_digest(model, "program", [(cal[0][0] + 1e-6,), cal[1]], "cosine") != base
    assert content_digest(model, "another program", cal, "cosine") != base  # same weights, other forward code
    assert content_digest(model, "program", [(cal[0][0], 3), cal[1]], "cosine") != base  # a non-tensor argument
