"""The tensor-network corpus through tcomp (issue 17), a fast seeded subset of bench/tn_corpus.py: each family in a
style of its own, forward at the example batch and another, and parameter gradients, equal to eager in float64 —
and no fallback (the test configuration turns a TcompWarning into an error)."""
import pytest
import torch

import tcomp
from tests.tn_corpus.families import FAMILIES, corpus_model

# one (family, style) a family, the styles taking turns across families so that each style is met
CASES = [(family, FAMILIES[family].styles[k % len(FAMILIES[family].styles)])
         for k, family in enumerate(sorted(FAMILIES))]


@pytest.mark.parametrize("family,style", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_a_corpus_model_compiles_to_eagers_function(family, style):
    case = corpus_model(50_000 + len(family), family=family, style=style)
    compiled = tcomp.compile(case.model, case.inputs, strict=True, backend="eager")
    for inputs in (case.inputs, case.make_inputs(3)):
        torch.testing.assert_close(compiled(*inputs), case.model(*inputs), rtol=1e-9, atol=1e-12)
    params = list(case.model.parameters())
    g_ref = torch.autograd.grad(case.model(*case.inputs).square().sum(), params)
    g_out = torch.autograd.grad(compiled(*case.inputs).square().sum(), params)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("style", ["tensordot", "vmap"])
def test_tensordot_and_vmap_are_contractions_not_calls(style):
    """tensordot (and einsum's sublist form) lower to Networks; a torch.vmap region is batched by export's retrace."""
    case = corpus_model(50_001, family="tree", style=style)
    compiled = tcomp.compile(case.model, case.inputs, strict=True, backend="eager")
    assert compiled.report.flops_before != 0
    torch.testing.assert_close(compiled(*case.inputs), case.model(*case.inputs), rtol=1e-9, atol=1e-12)
