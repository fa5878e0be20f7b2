"""tcomp: a tensor-network graph compiler for PyTorch."""
