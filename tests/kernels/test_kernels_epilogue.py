"""Epilogue chains: construction and validation, the torch form against explicit formulas, and the Triton form of
every pointwise function against torch at extreme inputs (under Triton's interpreter)."""
import math

import pytest
import torch

from tcomp.codegen.kernels import ACTIVATIONS, Activation, AddTensor, Epilogue, Scale, contract_pair
from tcomp.codegen.kernels.epilogue import epilogue_params, epilogue_source, signature_of

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

FORMULAS = {  # the definitions, written out in float64
    "relu": lambda x: x.clamp(min=0),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "tanh": torch.tanh,
}


def test_chain_builds_in_order_and_reports_its_signature():
    bias, residual = torch.zeros(3), torch.zeros(2, 3)
    epilogue = Epilogue().bias(bias).scale(2).activation("silu").residual(residual)
    assert epilogue.signature == ("bias", "scale", "silu", "residual")
    assert epilogue.steps[0].tensor is bias and epilogue.steps[1] == Scale(2.0)
    assert Epilogue((AddTensor("bias", bias), Activation("relu"))).signature == ("bias", "relu")
    assert Epilogue().signature == ()


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_torch_form_matches_the_definition(name):
    x = torch.linspace(-30, 30, 601, dtype=torch.float64)
    torch.testing.assert_close(Epilogue().activation(name).apply(x), FORMULAS[name](x))


def test_torch_form_applies_steps_in_order():
    x = torch.tensor([[-1.0, 2.0]], dtype=torch.float64)
    epilogue = Epilogue().scale(3).bias(torch.tensor([1.0, -10.0])).activation("relu").residual(torch.ones(1, 2))
    torch.testing.assert_close(epilogue.apply(x), torch.tensor([[1.0, 1.0]], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_triton_form_matches_torch_including_saturation(name):
    """Through a 1×1 contraction with 1, the kernel's epilogue sees each value of x itself."""
    x = torch.cat([torch.linspace(-12, 12, 97), torch.tensor([-200.0, -90.0, -1e-6, 0.0, 1e-6, 90.0, 200.0])])
    out = contract_pair("i,j->ij", x, torch.ones(1), epilogue=Epilogue().activation(name))[:, 0]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), FORMULAS[name](x.double()), rtol=1e-5, atol=2e-7)


@pytest.mark.parametrize("step, error, message", [
    (lambda: AddTensor("shift", torch.zeros(1)), ValueError, "bias.*residual"),
    (lambda: AddTensor("bias", [1.0]), TypeError, "must be a torch.Tensor"),
    (lambda: AddTensor("bias", torch.zeros(2, dtype=torch.int64)), ValueError, "dtype torch.int64"),
    (lambda: Scale(float("nan")), ValueError, "finite"),
    (lambda: Scale(True), ValueError, "finite real number"),
    (lambda: Activation("softplus"), ValueError, "unknown activation 'softplus'; known: relu, gelu"),
    (lambda: Epilogue(("relu",)), TypeError, "AddTensor, Scale or Activation"),
])
def test_bad_steps(step, error, message):
    with pytest.raises(error, match=message):
        step()


def test_signature_of_accepts_kinds_and_refuses_the_unknown():
    assert signature_of(None) == () and signature_of(("bias", "gelu")) == ("bias", "gelu")
    assert signature_of(Epilogue().scale(1.5)) == ("scale",)
    with pytest.raises(ValueError, match="unknown step kinds"):
        signature_of(("bias", "swish"))
    with pytest.raises(TypeError, match="sequence of step kinds"):
        signature_of("gelu")


def test_source_and_parameters_of_a_chain():
    signature = ("bias", "scale", "gelu", "residual")
    assert epilogue_params(signature, ["m0", "n0"]) == [
        ["bias0_ptr", "bias0_stride_m0", "bias0_stride_n0"], ["scale1"],
        ["residual3_ptr", "residual3_stride_m0", "residual3_stride_n0"]]
    lines = epilogue_source(signature, "acc", "mask", [["m0"], ["n0"]])
    code = [line for line in lines if not line.startswith("#")]
    assert code[0].startswith("acc += tl.load(bias0_ptr + (m0 * bias0_stride_m0)[:, None]")
    assert code[1] == "acc = acc * scale1"
    assert "tl.erf" in code[2] and code[3].startswith("acc += tl.load(residual3_ptr")
