"""Pairwise equations: index roles, and the errors for equations a pairwise kernel cannot compute."""
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.codegen.kernels.equation import PairwiseEquation


def test_roles_of_attention_scores():
    parsed = PairwiseEquation.parse("bhqd,bhkd->bhqk")
    assert (parsed.batch, parsed.m, parsed.n, parsed.k) == (("b", "h"), ("q",), ("k",), ("d",))


def test_roles_follow_output_order_and_k_follows_a():
    parsed = PairwiseEquation.parse("xabc, cdy -> yxdba")
    assert (parsed.batch, parsed.m, parsed.n, parsed.k) == ((), ("x", "b", "a"), ("y", "d"), ("c",))
    assert str(parsed) == "xabc,cdy->yxdba"


def test_matrix_vector_and_outer_product_have_empty_groups():
    assert PairwiseEquation.parse("ik,k->i").role_counts() == (0, 1, 0, 1)
    assert PairwiseEquation.parse("i,j->ij").role_counts() == (0, 1, 1, 0)


@pytest.mark.parametrize("equation, message", [
    ("ik,kj", "one '->'"),
    ("ik,kj->ij->ij", "one '->'"),
    ("ik->ik", "exactly two operands"),
    ("ik,kj,jl->il", "exactly two operands"),
    ("...k,kj->...j", "ellipsis"),
    ("i1,1j->ij", "not index letters"),
    ("iik,kj->ij", "repeats indices"),
    ("ik,kj->iij", "repeats indices"),
    ("ikz,kj->ij", "only in operand a"),
    ("ik,kjz->ij", "only in operand b"),
    ("ik,kj->ijq", "appear in no operand"),
])
def test_bad_equations_are_refused_with_the_reason(equation, message):
    with pytest.raises(ValueError, match=message):
        PairwiseEquation.parse(equation)


def test_non_string_equation_is_a_type_error():
    with pytest.raises(TypeError, match="string"):
        PairwiseEquation.parse(["ik,kj->ij"])


def test_sizes_are_checked_against_the_operands():
    parsed = PairwiseEquation.parse("bik,bkj->bij")
    assert parsed.sizes(torch.empty(2, 3, 4), torch.empty(2, 4, 5)) == {"b": 2, "i": 3, "k": 4, "j": 5}
    with pytest.raises(ValueError, match="index 'k' has size 4 in operand a but 6 in operand b"):
        parsed.sizes(torch.empty(2, 3, 4), torch.empty(2, 6, 5))
    with pytest.raises(ValueError, match="operand b has 2 dims"):
        parsed.sizes(torch.empty(2, 3, 4), torch.empty(4, 5))


@st.composite
def pairwise_equations(draw):
    letters = draw(st.permutations(string.ascii_letters))
    counts = [draw(st.integers(0, 3)) for _ in range(4)]
    batch, m, n, k = (letters[sum(counts[:r]):sum(counts[:r + 1])] for r in range(4))
    a = draw(st.permutations(batch + m + k))
    b = draw(st.permutations(batch + n + k))
    out = draw(st.permutations(batch + m + n))
    return "".join(a), "".join(b), "".join(out), (set(batch), set(m), set(n), set(k))


@settings(max_examples=100, deadline=None)
@given(pairwise_equations())
def test_roles_partition_the_indices(case):
    a, b, out, (batch, m, n, k) = case
    parsed = PairwiseEquation.parse(f"{a},{b}->{out}")
    assert (set(parsed.batch), set(parsed.m), set(parsed.n), set(parsed.k)) == (batch, m, n, k)
    for group in (parsed.batch, parsed.m, parsed.n):
        assert list(group) == sorted(group, key=out.index)
    assert list(parsed.k) == sorted(parsed.k, key=a.index)
