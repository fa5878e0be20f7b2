"""tcomp.passes: one module per pass (see docs/passes)."""
