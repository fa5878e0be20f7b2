"""A seeded corpus of tensor-network PyTorch models (issue 17, item 4), written independently of tcomp: see
families.py for the generator and bench/tn_corpus.py for the benchmark over it."""
