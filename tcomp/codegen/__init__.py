"""From the final Program to code that runs: :mod:`.emit` prints a Program as a ``torch.fx.GraphModule`` (deciding
nothing: every choice is in the Program and its plans), :mod:`.folded` holds the cached weight-only values the
emitted code calls, :mod:`.inductor` hands the emitted module to Inductor, :mod:`.kernels` generates Triton
kernels, and :mod:`.runnable` plans, emits and times a program for whatever measures one."""
