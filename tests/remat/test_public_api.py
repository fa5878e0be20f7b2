"""tcomp.remat re-exports the pass's public names."""
import tcomp.passes.rematerialize as rematerialize
import tcomp.remat


def test_public_names_are_the_pass_objects():
    for name in tcomp.remat.__all__:
        assert getattr(tcomp.remat, name) is getattr(rematerialize, name)
    assert {"schedule", "simulate", "Schedule", "BudgetInfeasibleError"} <= set(tcomp.remat.__all__)
