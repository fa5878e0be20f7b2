"""tcomp.remat is the solver as a library (schedule, simulate, measure); tcomp.passes.rematerialize applies it to a
training step."""
import tcomp.passes.rematerialize as rematerialize
import tcomp.remat


def test_library_and_pass_names():
    for module in (tcomp.remat, rematerialize):
        for name in module.__all__:
            assert getattr(module, name).__doc__, f"{module.__name__}.{name} has no docstring"
    assert {"schedule", "simulate", "Schedule", "BudgetInfeasibleError", "measure_peak_memory"} <= set(
        tcomp.remat.__all__)
    assert {"rematerialize_module", "RematReport"} <= set(rematerialize.__all__)
