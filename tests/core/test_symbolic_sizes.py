"""Symbolic sizes: a program compiled at one batch size and sequence length serves the others (issue 18), and the
polynomial fit behind it (tcomp.ir.symbolic.fit) is exact."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import tcomp
from tcomp.ir.symbolic import B, S, fit


class TinyEncoder(nn.Module):
    """Token and position embeddings, masked self-attention, a feed-forward layer: the shape of a BERT layer."""

    def __init__(self, vocab=50, d=32, heads=4):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(64, d)
        self.qkv, self.out, self.ff = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Linear(d, d)
        self.heads = heads

    def forward(self, ids, mask):
        b, s = ids.shape
        x = self.tok(ids) + self.pos(torch.arange(s))
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = (1.0 - mask[:, None, None, :].float()) * -1e4
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.out(a.transpose(1, 2).reshape(b, s, -1))
        flat = x.reshape(b * s, -1)  # a [B*S, d] matrix: the B*S size comes from both symbols
        return x + F.gelu(self.ff(flat)).view(b, s, -1)


def _tokens(b, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, s // 2:] = 0
    return ids, mask


def _close(compiled, model, *inputs):
    torch.testing.assert_close(compiled(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)


def test_a_token_model_compiled_once_serves_other_sequence_lengths_and_batches():
    model = TinyEncoder().eval()
    compiled = tcomp.compile(model, _tokens(4, 16), strict=True, dynamic=True)
    assert compiled.report.symbolic == {"B": 4, "S": 16}
    assert "sequence length S" in compiled.explain()
    for b, s in ((4, 16), (2, 9), (3, 33), (7, 2)):
        _close(compiled, model, *_tokens(b, s, seed=b * s))
    assert len(compiled._tcomp_artifacts) == 1
    assert "seq = ids.size(1)" in compiled.code


def test_by_default_a_second_sequence_length_compiles_a_program_for_every_length():
    """As torch.compile's automatic dynamic shapes: the first program specialises dimension 1, the first call with
    another length compiles one symbolic in it, and no later length compiles again."""
    model = TinyEncoder().eval()
    compiled = tcomp.compile(model, _tokens(4, 16), strict=True)
    assert compiled.report.symbolic == {"B": 4}
    _close(compiled, model, *_tokens(4, 20))
    assert compiled.report.symbolic == {"B": 4, "S": 20} and len(compiled._tcomp_artifacts) == 2
    for b, s in ((2, 9), (3, 33), (5, 16)):
        _close(compiled, model, *_tokens(b, s, seed=s))
    assert len(compiled._tcomp_artifacts) == 2


def test_dynamic_false_specialises_every_size():
    model = TinyEncoder().eval()
    compiled = tcomp.compile(model, _tokens(4, 16), strict=True, dynamic=False)
    assert compiled.report.symbolic == {}
    _close(compiled, model, *_tokens(5, 16))
    assert len(compiled._tcomp_artifacts) == 2


def test_a_sequence_of_one_and_a_batch_that_disagrees_are_other_signatures():
    model = TinyEncoder().eval()
    compiled = tcomp.compile(model, _tokens(4, 16), strict=True, dynamic=True)
    ids, mask = _tokens(3, 1)
    torch.testing.assert_close(compiled(ids, mask), model(ids, mask), rtol=1e-4, atol=1e-5)
    ids, _ = _tokens(3, 12)
    mask = torch.ones(3, 11, dtype=torch.long)  # eager's own error: the mask does not match the sequence
    with pytest.raises(RuntimeError):
        model(ids, mask)
    with pytest.raises(RuntimeError):
        compiled(ids, mask)
    assert len(compiled._tcomp_artifacts) == 2  # the second call compiled nothing: eager rejected it


class LearnedPositions(nn.Module):
    """A position table of fixed length: only the example's sequence length runs."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(16, 8))
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x + self.pos)


def test_a_model_that_runs_at_one_sequence_length_specialises_it_and_keeps_the_batch():
    model = LearnedPositions().eval()
    compiled = tcomp.compile(model, torch.randn(4, 16, 8), strict=True, dynamic=True)
    assert compiled.report.symbolic == {"B": 4}
    assert any("length of dimension 1" in note for note in compiled.report.notes)
    x = torch.randn(9, 16, 8)
    torch.testing.assert_close(compiled(x), model(x))
    with pytest.raises(RuntimeError):
        compiled(torch.randn(4, 12, 8))  # eager's error: the table does not broadcast


class FeatureSum(nn.Module):
    def forward(self, x):
        return torch.einsum("bij,bkj->bik", x, x).sum(1)


@pytest.mark.parametrize("flip", [12, 7])
def test_a_flag_computed_from_a_symbolic_size_is_computed_on_every_call(flip):
    """``x.shape[1] == flip`` is False at every length probed (16 and 2, 18, 21, 40), ``B * S > 200`` at every
    point probed (the batch up to 12): folding them would make the program silently wrong where they flip, inside
    the ranges it serves."""

    class FlagFromLength(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x) * (x.shape[1] == flip) + (x.shape[0] * x.shape[1] > 200)

    model = FlagFromLength().eval()
    compiled = tcomp.compile(model, (torch.randn(2, 16, 4),), strict=True, dynamic=True)
    assert compiled.report.symbolic == {"B": 2, "S": 16}
    for b, s in ((2, flip), (3, 12), (12, 20), (7, 30), (5, 13), (2, 16)):
        x = torch.randn(b, s, 4)
        torch.testing.assert_close(compiled(x), model(x))
    assert len(compiled._tcomp_artifacts) == 1


def test_dim_one_that_is_not_a_sequence_is_still_exact_at_other_sizes():
    model = FeatureSum()
    compiled = tcomp.compile(model, torch.randn(2, 5, 3), strict=True, dynamic=True)
    for shape in ((2, 5, 3), (3, 8, 3), (6, 2, 3)):
        x = torch.randn(shape)
        torch.testing.assert_close(compiled(x), model(x))
    assert len(compiled._tcomp_artifacts) == 1


# -- the fit -------------------------------------------------------------------------------------------------------

_coefficient = st.integers(min_value=-3, max_value=6)


@settings(max_examples=200, deadline=None)
@given(c0=_coefficient, cb=_coefficient, cs=_coefficient, cbs=_coefficient, q=st.sampled_from([1, 2, 3, 4]),
       b0=st.integers(2, 40), s0=st.integers(2, 200))
def test_fit_recovers_every_polynomial_of_degree_one_in_each_symbol(c0, cb, cs, cbs, q, b0, s0):
    """Sizes of the form (c0 + cb*B + cs*S + cbs*B*S) / q, sampled as capture samples them (the example, two other
    batches, two other lengths, one with both grown), come back exactly."""
    def size(b, s):
        return (c0 + cb * b + cs * s + cbs * b * s) / q

    points = [(b0, s0), (b0 + 2, s0), (b0 + 5, s0), (b0, s0 + 2), (b0, s0 + 5), (b0 + 2, s0 + 2)]
    if any(size(b, s) != int(size(b, s)) for b, s in points):
        return  # not a size of a tensor at these points
    fitted = fit([({B: b, S: s}, int(size(b, s))) for b, s in points])
    for b, s in [*points, (1000, 3), (7, 999)]:
        expected = size(b, s)
        value = fitted if isinstance(fitted, int) else fitted.subs({B: b, S: s})
        assert math.isclose(float(value), expected)


def test_fit_refuses_a_square():
    assert fit([({B: b}, b * b) for b in (4, 6, 9)]) is None
