"""The zoo's registry: names, tags, the default bench subset, deterministic builds and inputs, clear errors."""
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.zoo import TAGS, UnknownModelError, ZooEntry, entries, get_entry

NAMES = [entry.name for entry in entries()]
TENSOR_NETWORKS = {"mps_classifier", "tt_net", "peps", "equivariant_tp"}


def test_names_are_unique_and_in_the_documented_order():
    assert NAMES == ["mlp", "resnet18", "resnet50", "vit_tiny", "mlp_mixer", "minilm", "gpt2_small",
                     "mps_classifier", "tt_net", "peps", "equivariant_tp", "monarch_mlp"]
    assert entries() == entries() and entries() is not entries()  # a fresh list: callers may not mutate the zoo


def test_tags_are_known_and_tensor_network_models_are_tagged():
    for entry in entries():
        assert entry.tags and entry.tags <= TAGS, entry.name
        assert ("tensor-network" in entry.tags) == (entry.name in TENSOR_NETWORKS), entry.name


def test_unknown_tag_is_rejected():
    with pytest.raises(ValueError, match="unknown tags"):
        ZooEntry("x", "x", frozenset({"rnn"}), False, 1, torch.nn.Identity, lambda batch, generator: ())


def test_default_bench_subset():
    bench = {entry.name for entry in entries() if entry.default_bench}
    assert 6 <= len(bench) <= 8
    assert {"mlp", "resnet18"} | TENSOR_NETWORKS <= bench
    assert bench & {"minilm", "vit_tiny"}


@given(st.text(max_size=20))
def test_get_entry_finds_each_name_and_rejects_anything_else(name):
    if name in NAMES:
        assert get_entry(name).name == name
        return
    with pytest.raises(KeyError) as raised:
        get_entry(name)
    assert isinstance(raised.value, UnknownModelError)
    assert repr(name) in str(raised.value) and all(valid in str(raised.value) for valid in NAMES)


def test_get_entry_rejects_unhashable_names_clearly():
    with pytest.raises(UnknownModelError, match="valid names"):
        get_entry(["mlp"])


@pytest.mark.parametrize("name", NAMES)
def test_example_inputs_are_deterministic_and_take_the_batch(name):
    entry = get_entry(name)
    first, second = entry.example_inputs(batch=2), entry.example_inputs(batch=2)
    assert len(first) == len(second) >= 1
    for a, b in zip(first, second):
        assert a.shape[0] == 2
        assert torch.equal(a, b)


@settings(max_examples=20)
@given(st.integers(min_value=1, max_value=9))
def test_example_inputs_batch_override(batch):
    inputs = get_entry("equivariant_tp").example_inputs(batch=batch)
    assert [tuple(t.shape) for t in inputs] == [(batch, 32, 3), (batch, 16, 3)]


@given(st.one_of(st.integers(max_value=0), st.booleans(), st.floats(), st.text()))
def test_example_inputs_rejects_a_bad_batch(batch):
    with pytest.raises(ValueError, match="positive int"):
        get_entry("mlp").example_inputs(batch=batch)


def test_every_entry_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "zoo.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in doc, name
