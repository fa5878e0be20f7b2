"""A GPT-2-small decoder (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners").

12 pre-norm blocks, width 768, 12 heads, causal self-attention, tanh-approximated GELU, vocabulary 50257,
context 1024, output logits through the tied token embedding. Names follow Hugging Face `GPT2LMHeadModel`'s
transformer (`wte`, `wpe`, `h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}`, `ln_f`), but the
projections are `nn.Linear`: Hugging Face stores them as `Conv1D` with transposed ([in, out]) weights.
Initialisation as in the paper: N(0, 0.02), residual projections scaled by 1/√(2·layers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    context: int = 1024
    width: int = 768
    num_layers: int = 12
    num_heads: int = 12
    layer_norm_eps: float = 1e-5


GPT2_SMALL = GPT2Config()


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        if config.width % config.num_heads:
            raise ValueError(f"width {config.width} is not divisible by num_heads {config.num_heads}")
        self.num_heads = config.num_heads
        self.head_dim = config.width // config.num_heads
        self.c_attn = nn.Linear(config.width, 3 * config.width)
        self.c_proj = nn.Linear(config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.c_attn(x).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        return self.c_proj(out.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.width, 4 * config.width)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """`forward(input_ids [B, T] int, T ≤ context) -> next-token logits [B, T, vocab]`."""

    def __init__(self, config: GPT2Config = GPT2_SMALL):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.width)
        self.wpe = nn.Embedding(config.context, config.width)
        self.h = nn.Sequential(*(Block(config) for _ in range(config.num_layers)))
        self.ln_f = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = 0.02 / math.sqrt(2 * config.num_layers) if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.ln_f(self.h(self.wte(input_ids) + self.wpe(positions)))
        return F.linear(x, self.wte.weight)  # the output head is the token embedding (tied weights)


def gpt2_small() -> GPT2:
    """GPT-2 small: 124.4 M parameters (38.6 M of them in the tied token embedding)."""
    return GPT2(GPT2_SMALL)


def example_inputs(batch: int, generator: torch.Generator, seq_len: int = 256,
                   config: GPT2Config = GPT2_SMALL) -> tuple[Tensor]:
    """Random token ids [batch, seq_len]."""
    return (torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator),)
