"""contract_pair under Triton's interpreter vs torch.einsum in float64: random equations (1–3 indices per role, or
none), sizes that are not multiples of the tiles, permuted/sliced/expanded operands, every epilogue step, float32
and float16; plus the errors for calls the kernels cannot serve."""
import string

import pytest
import torch
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_test_support import LAYOUTS, make_operand, tolerance

from tcomp.codegen.kernels import ACTIVATIONS, Epilogue, contract_pair, kernel_source, runtime
from tcomp.codegen.kernels.contraction import INTERPRETER_CONFIG, plan_contraction

# e^x overflowing to inf is how the sigmoid-based activations saturate; numpy (the interpreter) warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

STEP_KINDS = ("bias", "residual", "scale", *ACTIVATIONS)
ROLE_LIMITS = {"batch": 4, "m": 48, "n": 48, "k": 70}  # element counts per role: at most 2×2 tiles of 32, 3 K steps


def reference(equation: str, a: torch.Tensor, b: torch.Tensor, epilogue: Epilogue | None) -> torch.Tensor:
    """The contraction and its epilogue in float64 (Epilogue.apply computes in its input's dtype)."""
    exact = torch.einsum(equation, a.double(), b.double())
    return exact if epilogue is None else epilogue.apply(exact)


def build_epilogue(kinds, out_shape, dtype, generator, draw_bits):
    """An epilogue of ``kinds``; ``draw_bits`` (an int) decides bias broadcasting and residual layouts."""
    epilogue = Epilogue()
    for position, kind in enumerate(kinds):
        bits = draw_bits >> (8 * position)
        if kind == "bias":
            shape = [size if (bits >> d) & 1 else 1 for d, size in enumerate(out_shape)]
            shape = shape[(bits >> 6) % (len(shape) + 1):]  # drop leading dims: right-aligned broadcasting
            epilogue = epilogue.bias(torch.randn(shape, generator=generator).to(dtype))
        elif kind == "residual":
            layout = ("contiguous", "permuted")[bits & 1]
            epilogue = epilogue.residual(make_operand(tuple(out_shape), dtype, layout, generator))
        elif kind == "scale":
            epilogue = epilogue.scale(((bits % 9) - 4) / 2 or 0.75)
        else:
            epilogue = epilogue.activation(kind)
    return epilogue


@st.composite
def contractions(draw):
    letters = draw(st.permutations(string.ascii_letters))
    groups, sizes, used = {}, {}, 0
    for role, limit in ROLE_LIMITS.items():
        count = draw(st.integers(0, 3))
        groups[role] = letters[used:used + count]
        used += count
        for index in groups[role]:
            sizes[index] = draw(st.integers(1, max(1, min(limit, 45 if count == 1 else 6))))
            limit //= sizes[index]
    a = "".join(draw(st.permutations(groups["batch"] + groups["m"] + groups["k"])))
    b = "".join(draw(st.permutations(groups["batch"] + groups["n"] + groups["k"])))
    out = "".join(draw(st.permutations(groups["batch"] + groups["m"] + groups["n"])))
    return {
        "equation": f"{a},{b}->{out}",
        "shapes": [tuple(sizes[i] for i in indices) for indices in (a, b, out)],
        "dtype": draw(st.sampled_from([torch.float32, torch.float16])),
        "out_dtype": draw(st.sampled_from([None, torch.float32, torch.float16])),
        "layouts": [draw(st.sampled_from(LAYOUTS)) for _ in range(2)],
        "layout_choices": [draw(st.integers(0, 5)) for _ in range(2)],
        "epilogue": draw(st.lists(st.sampled_from(STEP_KINDS), max_size=3)),
        "epilogue_dtype": draw(st.sampled_from([torch.float32, None])),
        "bits": draw(st.integers(0, 2**24 - 1)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@settings(max_examples=60, deadline=None)
@given(contractions())
def test_contract_pair_matches_einsum(case):
    generator = torch.Generator().manual_seed(case["seed"])
    a_shape, b_shape, out_shape = case["shapes"]
    a = make_operand(a_shape, case["dtype"], case["layouts"][0], generator, case["layout_choices"][0])
    b = make_operand(b_shape, case["dtype"], case["layouts"][1], generator, case["layout_choices"][1])
    a_before, b_before = a.clone(), b.clone()
    epilogue = build_epilogue(case["epilogue"], out_shape, case["epilogue_dtype"] or case["dtype"], generator,
                              case["bits"])

    out = contract_pair(case["equation"], a, b, epilogue=epilogue, out_dtype=case["out_dtype"])

    expected_dtype = case["out_dtype"] or case["dtype"]
    assert out.dtype == expected_dtype and out.shape == out_shape and out.is_contiguous()
    torch.testing.assert_close(out.double(), reference(case["equation"], a, b, epilogue), **tolerance(expected_dtype))
    assert torch.equal(a, a_before) and torch.equal(b, b_before)


@pytest.mark.parametrize("kind", STEP_KINDS)
def test_every_epilogue_step_alone(kind):
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(2, 33, 40, generator=generator)
    b = torch.randn(2, 40, 35, generator=generator).transpose(1, 2)  # [b, j, k]
    epilogue = build_epilogue([kind], (2, 33, 35), torch.float32, generator, draw_bits=0b1000110)
    out = contract_pair("bik,bjk->bij", a, b, epilogue=epilogue)
    torch.testing.assert_close(out.double(), reference("bik,bjk->bij", a, b, epilogue), **tolerance(torch.float32))


def test_a_long_chain_in_order():
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(40, 24, generator=generator), torch.randn(24, 36, generator=generator)
    bias, residual = torch.randn(36, generator=generator), torch.randn(40, 36, generator=generator)
    epilogue = Epilogue().bias(bias).scale(0.5).activation("gelu").residual(residual).activation("tanh")
    expected = torch.tanh(torch.nn.functional.gelu((a.double() @ b.double() + bias.double()) * 0.5)
                          + residual.double())
    torch.testing.assert_close(contract_pair("ik,kj->ij", a, b, epilogue=epilogue).double(), expected,
                               **tolerance(torch.float32))


@pytest.mark.parametrize("equation, a_shape, b_shape", [
    ("xabc,cdy->xabdy", (2, 3, 5, 7), (7, 4, 3)),      # multi-index M and N groups
    ("bthd,hde->bte", (2, 9, 3, 5), (3, 5, 11)),       # two K indices (heads × head dim)
    ("ik,k->i", (37, 19), (19,)),                      # matrix-vector: no N index
    ("i,j->ij", (33,), (34,)),                         # outer product: no K index
    ("bhqd,bhkd->bhqk", (1, 2, 35, 16), (1, 2, 33, 16)),
])
def test_shapes_of_note(equation, a_shape, b_shape):
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(a_shape, generator=generator), torch.randn(b_shape, generator=generator)
    torch.testing.assert_close(contract_pair(equation, a, b).double(), reference(equation, a, b, None),
                               **tolerance(torch.float32))


def test_empty_contraction_gives_the_epilogue_of_zero():
    a, b, bias = torch.empty(3, 0), torch.empty(0, 4), torch.arange(4.0)
    out = contract_pair("ik,kj->ij", a, b, epilogue=Epilogue().bias(bias).activation("relu"))
    torch.testing.assert_close(out, bias.expand(3, 4))


def test_empty_output_is_returned_without_a_launch():
    out = contract_pair("ik,kj->ij", torch.empty(0, 5), torch.empty(5, 4))
    assert out.shape == (0, 4)


def test_operands_are_read_in_place_through_their_strides():
    base = torch.randn(6, 40, 30)
    a = base[::2].transpose(1, 2)                      # [3, 30, 40]: sliced batch, transposed
    b = torch.randn(40, 1).expand(40, 25)              # stride 0 along N
    launch = plan_contraction("bik,kj->bij", a, b)   # M = (b, i)
    assert launch.values["a_ptr"] is a and launch.values["b_ptr"] is b
    assert [launch.values[f"a_stride_{d}"] for d in ("m0", "m1", "k0")] == list(a.stride())
    assert launch.values["b_stride_n0"] == 0
    torch.testing.assert_close(launch.run(), torch.einsum("bik,kj->bij", a, b), rtol=1e-4, atol=1e-4)


def test_k_indices_walk_the_smallest_stride_fastest():
    a = torch.randn(5, 6, 7).permute(0, 2, 1)          # "ikl" [5, 7, 6]: k stride 1, l stride 7
    b = torch.randn(7, 6, 3).permute(1, 0, 2)          # "lkj" [6, 7, 3]
    launch = plan_contraction("ikl,lkj->ij", a, b)
    assert (launch.values["a_stride_k0"], launch.values["a_stride_k1"]) == (7, 1)   # K walked as (l, k)
    torch.testing.assert_close(launch.run(), torch.einsum("ikl,lkj->ij", a, b), rtol=1e-4, atol=1e-4)


def test_offsets_switch_to_64_bits_only_when_needed():
    small = plan_contraction("ik,kj->ij", torch.empty(4, 8, device="meta"), torch.empty(8, 4, device="meta"))
    assert small.constants["INDEX_TYPE"] == tl.int32
    huge = plan_contraction("ik,kj->ij", torch.empty(2**16, 2**15 + 1, device="meta"),
                            torch.empty(2**15 + 1, 4, device="meta"))
    assert huge.constants["INDEX_TYPE"] == tl.int64


def test_kernel_source_is_the_kernel_that_runs():
    source = kernel_source("bhqd,bhkd->bhqk", epilogue=("scale",))
    epilogue = Epilogue().scale(0.125)
    assert source == plan_contraction("bhqd,bhkd->bhqk", torch.empty(1, 1, 2, 2), torch.empty(1, 1, 2, 2),
                                      epilogue=epilogue).spec.source
    assert source == kernel_source("xyzw,xyvw->xyzv", epilogue=epilogue)  # same role counts, other letters
    assert source != kernel_source("bhqd,bhkd->bhqk")
    assert "def contract_batch2_m1_n1_k1_scale(" in source and "tl.dot(" in source
    compile(source, "<kernel>", "exec")


def test_interpreter_uses_its_one_small_configuration():
    a, b = torch.randn(40, 8), torch.randn(8, 40)
    launch = plan_contraction("ik,kj->ij", a, b)
    launch.run()
    assert runtime.chosen_config(launch.spec, a.device).startswith(
        ", ".join(f"{k}: {v}" for k, v in INTERPRETER_CONFIG.block.items()))


@pytest.mark.parametrize("a, b, error, message", [
    (torch.empty(2, 3), torch.empty(3, 4, dtype=torch.float16), ValueError, "share one dtype"),
    (torch.empty(2, 3, dtype=torch.int32), torch.empty(3, 4, dtype=torch.int32), ValueError, "not supported"),
    (torch.empty(2, 3, dtype=torch.float64), torch.empty(3, 4, dtype=torch.float64), ValueError, "not supported"),
    (torch.empty(2, 3), torch.empty(5, 4), ValueError, "index 'k' has size 3 in operand a but 5"),
    (torch.empty(2, 3), torch.empty(3, 4, 1), ValueError, "operand b has 3 dims"),
    (torch.empty(2, 3), [[1.0]], TypeError, "b must be a torch.Tensor"),
    (torch.empty(2, 3), torch.empty(3, 4, device="meta"), ValueError, "one device"),
])
def test_bad_operands(a, b, error, message):
    with pytest.raises(error, match=message):
        contract_pair("ik,kj->ij", a, b)


def test_bad_epilogues_and_output_dtypes():
    a, b = torch.empty(2, 3), torch.empty(3, 4)
    with pytest.raises(ValueError, match=r"bias of shape \(3,\) does not broadcast to the output shape \(2, 4\)"):
        contract_pair("ik,kj->ij", a, b, epilogue=Epilogue().bias(torch.empty(3)))
    with pytest.raises(ValueError, match="residual is on meta"):
        contract_pair("ik,kj->ij", a, b, epilogue=Epilogue().residual(torch.empty(2, 4, device="meta")))
    with pytest.raises(TypeError, match="must be an Epilogue"):
        contract_pair("ik,kj->ij", a, b, epilogue=("bias",))
    with pytest.raises(ValueError, match="out_dtype torch.int64 is not supported"):
        contract_pair("ik,kj->ij", a, b, out_dtype=torch.int64)


def test_bfloat16_is_refused_under_the_interpreter():
    a, b = torch.empty(2, 3, dtype=torch.bfloat16), torch.empty(3, 4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 is not supported under Triton's interpreter"):
        contract_pair("ik,kj->ij", a, b)
    with pytest.raises(ValueError, match="bfloat16 is not supported under Triton's interpreter"):
        contract_pair("ik,kj->ij", a.float(), b.float(), out_dtype=torch.bfloat16)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="cannot run on device 'cpu'.*TRITON_INTERPRET=1"):
        contract_pair("ik,kj->ij", torch.empty(2, 3), torch.empty(3, 4))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the setting at call time decides: the same call now runs
    assert contract_pair("ik,kj->ij", torch.ones(2, 3), torch.ones(3, 4)).eq(3).all()
