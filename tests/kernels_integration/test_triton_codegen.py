"""triton_codegen: zoo models and random networks with kernels="triton" (Triton's interpreter on CPU) equal to
eager; gradients still flow (the kernels have no backward; the dispatcher runs torch then)."""
import pytest
import torch

import tcomp
from tcomp.ir import Network
from tcomp.numerics import compare
from tcomp.zoo import entries, get_entry


def small_inputs(name: str) -> tuple:
    """Inputs small enough for the interpreter (each kernel program instance costs milliseconds there)."""
    entry = get_entry(name)
    inputs = entry.example_inputs(batch=1)
    if name in ("resnet18", "resnet50"):
        return (inputs[0][:, :, :32, :32].contiguous(),)
    if name in ("minilm", "gpt2_small"):
        return tuple(t[:, :8].contiguous() for t in inputs)
    return inputs


# ViT-tiny, MLP-Mixer and GPT-2 take 3-8 minutes each under the interpreter (thousands of program instances even at
# batch 1): they are checked by bench/triton_interpreter_zoo.py; their building blocks are checked below at small
# width by test_transformer_and_mixer_blocks.
HEAVY = ("vit_tiny", "mlp_mixer", "gpt2_small")
FAST = [e.name for e in entries() if e.name not in HEAVY]


@pytest.mark.parametrize("name", FAST)
def test_zoo_model_with_triton_kernels_equals_eager(name):
    model = get_entry(name).build()
    inputs = small_inputs(name)
    compiled = tcomp.compile(model, inputs, kernels="triton", strict=True)
    assert any(op.kernel == "triton" for op in compiled.program.ops if isinstance(op, Network))
    assert "generated Triton kernels" in compiled.code
    with torch.no_grad():
        c = compare(model(*inputs), compiled(*inputs))
    assert c.ok, c.detail


class Block(torch.nn.Module):
    """A pre-norm transformer block and a Mixer token-mixing MLP, at a width the interpreter runs quickly."""

    def __init__(self, d=32, heads=4, tokens=12):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc1, self.fc2 = torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d)
        self.tok1, self.tok2 = torch.nn.Linear(tokens, 16), torch.nn.Linear(16, tokens)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        att = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))
        return x + self.tok2(torch.nn.functional.gelu(self.tok1(x.transpose(1, 2)))).transpose(1, 2)


def test_transformer_and_mixer_blocks():
    torch.manual_seed(0)
    model = Block().eval()
    x = torch.randn(2, 12, 32)
    compiled = tcomp.compile(model, x, kernels="triton", strict=True)
    assert sum(op.kernel == "triton" for op in compiled.program.ops if isinstance(op, Network)) >= 6
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_kernels_torch_never_uses_them_and_auto_does_not_on_cpu():
    model = get_entry("mlp").build()
    x = small_inputs("mlp")
    for kernels in ("torch", "auto"):
        compiled = tcomp.compile(model, x, kernels=kernels, strict=True)
        assert all(op.kernel is None for op in compiled.program.ops if isinstance(op, Network))


def test_gradients_flow_through_kernel_networks():
    model = get_entry("equivariant_tp").build()
    inputs = small_inputs("equivariant_tp")
    compiled = tcomp.compile(model, inputs, kernels="triton", strict=True)
    params = list(model.parameters())
    ref = torch.autograd.grad(model(*inputs).square().sum(), params)
    out = torch.autograd.grad(compiled(*inputs).square().sum(), params)
    for a, b in zip(out, ref):  # float32 sums in another order: an absolute tolerance that fits the gradients' scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_inspect_kernels_shows_sources(capsys):
    from tcomp.cli.main import main

    assert main(["inspect", "zoo:mlp", "--batch", "2", "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "@triton.jit" in out and "tcomp_codegen_kernels_dispatch_contract" in out
