"""tcomp.numerics.compare: relative to the reference's largest finite magnitude; an overflow eager shares is
equal, one it does not is a mismatch."""
import torch

from tcomp.numerics import compare


def test_shared_infinities_and_nans_are_equal_others_are_not():
    ref = torch.tensor([1.0, float("inf"), float("-inf"), float("nan")])
    assert compare(ref, ref.clone()).ok
    assert compare(ref, ref + torch.tensor([1e-6, 0, 0, 0])).ok
    assert not compare(ref, torch.tensor([1.0, float("inf"), float("inf"), float("nan")])).ok  # -inf became inf
    assert not compare(ref, torch.tensor([1.0, 3.0, float("-inf"), float("nan")])).ok  # inf became finite
    nan = compare(torch.tensor([1.0, 2.0]), torch.tensor([1.0, float("nan")]))
    assert not nan.ok and "NaN" in nan.detail


def test_the_scale_is_the_largest_finite_magnitude():
    ref = torch.tensor([100.0, float("inf")])
    assert not compare(ref, torch.tensor([101.0, float("inf")])).ok  # 1 % of 100, not 1 % of infinity
    assert compare(ref, torch.tensor([100.001, float("inf")])).ok
