"""Approximate compilation as a library: what the structured, precision, tucker and select passes use.

- :mod:`.calibration` — the user's batches split into fit and held-out, with the model's reference outputs; running
  a program with one site observed or replaced;
- :mod:`.measurements` — results remembered per model and data, in the process and on disk;
- :mod:`.option_time` — an option timed against its dense site, as a ratio, in turns;
- :mod:`.apply` — options applied to a Program (factors merged into Networks, conv rewrites, dtypes propagated);
- :mod:`.precision` — a program in bf16 throughout;
- :mod:`.selection` — the multiple-choice knapsack on CP-SAT, verified and tightened, on two bases;
- :mod:`.heal` — distillation of the factors against the original model;
- :mod:`.metrics` — relative L2, cosine, a user's callable;
- :mod:`.factorize` — the factorization maths (SVD and its activation-aware kin, Monarch, BTT, Kronecker,
  Tucker-2, CP, Tucker packing), each module citing its paper;
- :mod:`.layers` — structured ``nn.Linear`` replacements for training from scratch.
"""
