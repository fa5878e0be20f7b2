"""Pieces the exact rewrite passes share, not passes themselves: :mod:`.weights` (a rewritten weight kept a cached
function of the original parameters) and :mod:`.convolution` (every form of a convolution Call seen as one)."""
