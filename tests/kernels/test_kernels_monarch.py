"""The fused Monarch / BTT kernel under Triton's interpreter vs its einsum definition in float64: block counts and
sizes that are not powers of two (nor multiples of the 16-wide tiles), leading batch dims, strided inputs, ranks
1–3, float16, epilogues; plus the errors for factors that do not fit."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_test_support import make_operand, tolerance

from tcomp.codegen.kernels import (BTT_EQUATION, MONARCH_EQUATION, Epilogue, btt_multiply, kernel_source,
                                   monarch_multiply)

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def btt_reference(x: torch.Tensor, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """einsum('bki,kjir,jlkr->blj') on x viewed as [rows, k, i], flattened to [..., l·j]: in float64, except that
    the intermediate is rounded to x's dtype, as the kernel (and the unfused path) store it."""
    k, j, i, _ = R.shape
    intermediate = torch.einsum("bki,kjir->bkjr", x.double().reshape(-1, k, i), R.double()).to(x.dtype)
    out = torch.einsum("bkjr,jlkr->blj", intermediate.double(), L.double())
    return out.reshape(*x.shape[:-1], L.shape[1] * j)


def test_monarch_matches_its_einsum_with_odd_block_counts():
    generator = torch.Generator().manual_seed(0)
    k, i, j, l = 3, 7, 5, 17                          # l > 16: two l tiles; nothing a power of two
    x = torch.randn(2, 9, k * i, generator=generator)
    R, L = torch.randn(k, j, i, generator=generator), torch.randn(j, l, k, generator=generator)
    out = monarch_multiply(x, L, R)
    expected = torch.einsum("bki,kji,jlk->blj", x.double().reshape(-1, k, i), R.double(), L.double())
    assert out.shape == (2, 9, l * j) and out.dtype == x.dtype
    torch.testing.assert_close(out.double(), expected.reshape(2, 9, l * j), **tolerance(torch.float32))


@st.composite
def btt_cases(draw):
    return {
        "k": draw(st.integers(1, 20)), "i": draw(st.integers(1, 20)), "j": draw(st.integers(1, 20)),
        "l": draw(st.integers(1, 20)), "rank": draw(st.integers(1, 3)), "rows": draw(st.integers(1, 20)),
        "lead": draw(st.sampled_from([(), (2,)])),
        "dtype": draw(st.sampled_from([torch.float32, torch.float16])),
        "x_layout": draw(st.sampled_from(["contiguous", "sliced"])),
        "factor_layout": draw(st.sampled_from(["contiguous", "permuted"])),
        "epilogue": draw(st.sampled_from([(), ("bias", "gelu"), ("scale", "residual", "silu")])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@settings(max_examples=25, deadline=None)
@given(btt_cases())
def test_btt_matches_its_einsum(case):
    generator = torch.Generator().manual_seed(case["seed"])
    k, i, j, l, rank, dtype = case["k"], case["i"], case["j"], case["l"], case["rank"], case["dtype"]
    x = make_operand((*case["lead"], case["rows"], k * i), dtype, case["x_layout"], generator, choice=-2)
    R = make_operand((k, j, i, rank), dtype, case["factor_layout"], generator) * i ** -0.5
    L = make_operand((j, l, k, rank), dtype, case["factor_layout"], generator) * (k * rank) ** -0.5
    out_shape = (*x.shape[:-1], l * j)
    epilogue = Epilogue()
    for kind in case["epilogue"]:
        if kind == "bias":
            epilogue = epilogue.bias(torch.randn(l * j, generator=generator).to(dtype))
        elif kind == "residual":
            epilogue = epilogue.residual(torch.randn(out_shape, generator=generator).to(dtype))
        elif kind == "scale":
            epilogue = epilogue.scale(-0.5)
        else:
            epilogue = epilogue.activation(kind)

    out = btt_multiply(x, L, R, epilogue=epilogue)

    assert out.shape == out_shape and out.dtype == dtype
    expected = epilogue.apply(btt_reference(x, L, R))
    torch.testing.assert_close(out.double(), expected, **tolerance(dtype))


def test_intermediate_is_rounded_like_the_unfused_path():
    """float16 in, float32 out: the result equals the two-step product whose intermediate is stored in float16."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4 * 6, generator=generator).half()
    R, L = torch.randn(4, 3, 6, generator=generator).half(), torch.randn(3, 7, 4, generator=generator).half()
    intermediate = torch.einsum("bki,kji->bkj", x.double().reshape(5, 4, 6), R.double()).half()
    expected = torch.einsum("bkj,jlk->blj", intermediate.double(), L.double()).reshape(5, 21)
    out = monarch_multiply(x, L, R, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_one_kernel_serves_monarch_and_btt():
    assert kernel_source(MONARCH_EQUATION) == kernel_source(BTT_EQUATION) == kernel_source(" bki, kjir, jlkr -> blj")
    with_bias = kernel_source(BTT_EQUATION, epilogue=("bias",))
    assert with_bias != kernel_source(BTT_EQUATION) and "def block_tensor_train_bias(" in with_bias
    assert "tl.permute(y, (2, 1, 0))" in with_bias  # the permutation between the factors happens on chip


@pytest.mark.parametrize("x_shape, L_shape, R_shape, message", [
    ((4, 12), (3, 5), (2, 3, 6), "L must be a 3-D tensor"),
    ((4, 12), (3, 5, 2), (2, 3, 6, 1), "R must be a 3-D tensor"),
    ((4, 13), (3, 5, 2), (2, 3, 6), r"x must end in k·i = 2·6 = 12 features"),
    ((4, 12), (4, 5, 2), (2, 3, 6), r"L \(4, 5, 2, 1\) does not fit R \(2, 3, 6, 1\)"),
    ((4, 12), (3, 5, 3), (2, 3, 6), "does not fit R"),
])
def test_monarch_shape_errors(x_shape, L_shape, R_shape, message):
    with pytest.raises(ValueError, match=message):
        monarch_multiply(torch.empty(x_shape), torch.empty(L_shape), torch.empty(R_shape))


def test_btt_errors():
    x, L, R = torch.empty(4, 12), torch.empty(3, 5, 2, 2), torch.empty(2, 3, 6, 2)
    with pytest.raises(ValueError, match="R must be"):
        btt_multiply(x, L, R[..., 0])
    with pytest.raises(ValueError, match="does not fit R"):
        btt_multiply(x, L[..., :1], R)
    with pytest.raises(ValueError, match="share one dtype"):
        btt_multiply(x.half(), L, R)
    with pytest.raises(ValueError, match="does not broadcast"):
        btt_multiply(x, L, R, epilogue=Epilogue().bias(torch.empty(14)))
    assert btt_multiply(torch.empty(0, 12), L, R).shape == (0, 15)
