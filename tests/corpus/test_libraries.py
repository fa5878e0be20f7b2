"""Tensor-network library models as their users build them (issue 16; the corpus is tests/corpus/libraries.py): e3nn,
tensorly-torch, opt_einsum_fx. Each compiles with no fallback (``strict=True``; the test configuration turns any
TcompWarning into an error), matches eager forward at the example batch and another, matches eager's parameter
gradients, and round-trips its ``state_dict``. A model whose library is not installed is skipped, by name."""
import importlib.util

import pytest
import torch

import tcomp
from tests.corpus.libraries import LIBRARIES

CASES = [pytest.param(make, id=make.__name__, marks=pytest.mark.skipif(not importlib.util.find_spec(library),
                                                                      reason=f"{library} is not installed"))
         for library, builders in LIBRARIES.items() for make in builders]


def _close(out: torch.Tensor, ref: torch.Tensor, what: str, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(out, ref, rtol=rtol, atol=rtol * max(1.0, ref.abs().max().item()), msg=what)


@pytest.mark.parametrize("make", CASES)
def test_a_library_model_compiles_and_matches_eager(make):
    case = make()
    model = case.model.eval()
    compiled = tcomp.compile(model, case.inputs(8, 0), strict=True, backend="eager")
    assert compiled.report.status in ("compiled", "compiled in pieces")
    for batch, seed in ((8, 1), (3, 2)):
        inputs = case.inputs(batch, seed)
        with torch.no_grad():
            _close(compiled(*inputs), model(*inputs), f"{case.name} at batch {batch}")
    assert all(a.report.status != "eager fallback" for a in compiled._tcomp_artifacts)

    inputs = case.inputs(8, 3)
    params = [p for p in model.parameters() if p.requires_grad]
    ref = torch.autograd.grad(model(*inputs).square().mean(), params, allow_unused=True)
    out = torch.autograd.grad(compiled(*inputs).square().mean(), params, allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), out, ref):
        if b is None:
            assert a is None or not a.any(), name
        else:
            _close(a, b, f"{case.name}: gradient of {name}", rtol=1e-3)


@pytest.mark.parametrize("make", CASES)
def test_a_library_models_state_dict_round_trips(make):
    case, other = make(), make()
    with torch.no_grad():  # another model of the same structure: its parameters moved away from the first's
        for p in other.model.parameters():
            p.mul_(1.5).add_(0.01)
    compiled = tcomp.compile(case.model.eval(), case.inputs(4, 0), strict=True, backend="eager")
    assert list(compiled.state_dict()) == list(case.model.state_dict())
    compiled.load_state_dict(other.model.state_dict())
    inputs = case.inputs(4, 1)
    with torch.no_grad():
        _close(compiled(*inputs), other.model.eval()(*inputs), f"{case.name} after load_state_dict")


def test_a_factorized_embedding_compiles_around_its_numpy_call():
    """tensorly-torch's BlockTT embedding calls ``np.unravel_index`` on the token ids: torch.fx and torch.export stop
    there, TorchDynamo breaks the graph, and the contractions on either side compile; the report names the line."""
    pytest.importorskip("tltorch")
    from tests.corpus.libraries import tltorch_embedding

    torch._dynamo.reset()  # Dynamo's frames recompile at most 8 times a process: earlier tests compiled these
    case = tltorch_embedding()
    compiled = tcomp.compile(case.model.eval(), case.inputs(8, 0), strict=True, backend="eager")
    assert compiled.report.status == "compiled in pieces"
    assert any("np.unravel_index" in note for note in compiled.report.notes), compiled.report.notes
    assert sum(piece.report.flops_at("after") > 0 for piece in compiled.report.pieces) >= 2
