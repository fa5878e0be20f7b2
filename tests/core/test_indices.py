"""Index algebra: the common refinement of two row-major factorisations."""
import math

from hypothesis import given
from hypothesis import strategies as st

from tcomp.ir.indices import IndexPool, canonical_names, refine
from tcomp.ir.symbolic import B


def test_refine_split_and_merge():
    pieces, a, b = refine([B, 768], [B, 12, 64])
    assert pieces == [B, 12, 64]
    assert [list(r) for r in a] == [[0], [1, 2]]
    assert [list(r) for r in b] == [[0], [1], [2]]


def test_refine_interleaved():
    pieces, a, b = refine([12, 64], [24, 32])
    assert pieces == [12, 2, 32]
    assert [list(r) for r in a] == [[0], [1, 2]]
    assert [list(r) for r in b] == [[0, 1], [2]]


def test_refine_incompatible_and_mismatched():
    assert refine([6, 10], [4, 15]) is None
    assert refine([6], [7]) is None


def test_refine_size_one_dims_are_empty_groups():
    pieces, a, b = refine([1, 6, 1], [2, 3])
    assert pieces == [2, 3]
    assert [list(r) for r in a] == [[], [0, 1], []]


@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.data())
def test_refine_of_random_regroupings(factors, data):
    """Group one list of prime-ish factors two ways; the refinement must reproduce both groupings."""
    def grouping(draw_cuts):
        cuts = sorted(set(draw_cuts))
        dims, last = [], 0
        for c in cuts + [len(factors)]:
            dims.append(math.prod(factors[last:c]))
            last = c
        return dims

    a = grouping(data.draw(st.lists(st.integers(1, len(factors)), max_size=4)))
    b = grouping(data.draw(st.lists(st.integers(1, len(factors)), max_size=4)))
    pieces, ra, rb = refine(a, b)
    assert math.prod(pieces) == math.prod(factors)
    for dims, ranges in ((a, ra), (b, rb)):
        assert [math.prod(pieces[k] for k in r) for r in ranges] == dims


def test_index_pool_and_canonical_names():
    pool = IndexPool({"a", "c"})
    assert [pool.new() for _ in range(3)] == ["b", "d", "e"]
    assert canonical_names([("x", "y"), ("y", "z")]) == {"x": "a", "y": "b", "z": "c"}
