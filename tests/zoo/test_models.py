"""Every zoo model: builds deterministically, runs at any batch size, traces with torch.fx to the same function."""
import functools

import pytest
import torch
from torch.fx import symbolic_trace

from tcomp.zoo import entries, get_entry

# Input and output shapes at batch B, as documented in docs/zoo.md.
SHAPES = {
    "mlp": ([(784,)], (10,)),
    "resnet18": ([(3, 224, 224)], (1000,)),
    "resnet50": ([(3, 224, 224)], (1000,)),
    "vit_tiny": ([(3, 224, 224)], (1000,)),
    "mlp_mixer": ([(3, 224, 224)], (1000,)),
    "minilm": ([(128,), (128,)], (128, 384)),
    "gpt2_small": ([(256,)], (256, 50257)),
    "mps_classifier": ([(1, 8, 8)], (10,)),
    "tt_net": ([(1024,)], (10,)),
    "peps": ([(1, 4, 4)], (10,)),
    "equivariant_tp": ([(32, 3), (16, 3)], (32, 9)),
    "monarch_mlp": ([(1024,)], (10,)),
}
NAMES = [entry.name for entry in entries()]
BATCH = 2


@functools.cache
def run_at_batch(name):
    """The model (built with the global RNG seeded 123), its inputs at batch 2, and its eager output."""
    entry = get_entry(name)
    torch.manual_seed(123)
    model, inputs = entry.build(), entry.example_inputs(batch=BATCH)
    with torch.no_grad():
        return model, inputs, model(*inputs)


def assert_close_in_fp32(actual, expected):
    """Equal up to float32 reassociation: 1e-4 of the output's scale."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale)


def test_shapes_cover_the_zoo():
    assert set(SHAPES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_runs_with_documented_shapes_and_finite_output(name):
    model, inputs, output = run_at_batch(name)
    input_shapes, output_shape = SHAPES[name]
    assert [tuple(t.shape) for t in inputs] == [(BATCH, *shape) for shape in input_shapes]
    assert get_entry(name).example_inputs()[0].shape[0] == get_entry(name).default_batch
    assert not model.training
    assert output.shape == (BATCH, *output_shape)
    assert output.dtype == torch.float32
    assert torch.isfinite(output).all()
    assert output.std() > 0


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_trace_equals_eager(name):
    model, inputs, output = run_at_batch(name)
    traced = symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(traced(*inputs), output)  # the same ops in the same order


@pytest.mark.parametrize("name", NAMES)
def test_rows_are_independent_of_the_batch(name):
    model, inputs, output = run_at_batch(name)
    with torch.no_grad():
        last_row = model(*(t[-1:] for t in inputs))
    assert_close_in_fp32(last_row, output[-1:])


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic_and_leaves_the_global_rng_alone(name):
    first = run_at_batch(name)[0].state_dict()
    torch.manual_seed(456)  # a global state other than the first build's must not change the weights
    rng_before = torch.random.get_rng_state()
    second = get_entry(name).build().state_dict()
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
