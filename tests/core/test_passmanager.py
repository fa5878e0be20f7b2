"""The pass manager: passes declare what they require and ensure, a selection that breaks an order is refused up
front with the passes that would fix it, and the properties are checked on the program itself."""
import pytest
import torch
import torch.nn as nn

import tcomp
from tcomp import passes
from tcomp.ir import Program
from tcomp.passmanager import PROPERTIES, Pass, PassContext, PassReport, run_passes, select_passes


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_every_pass_declares_known_properties_and_the_pipeline_meets_them():
    pipeline = passes.pipeline()
    for p in pipeline:
        assert set(p.requires + p.ensures) <= set(PROPERTIES)
    assert [p.name for p in select_passes(pipeline, None, approximate=True)] == [p.name for p in pipeline]
    assert next(p for p in pipeline if p.name == "contraction_order").ensures == ("planned",)
    assert next(p for p in pipeline if p.name == "select").requires == ("sites",)


def test_a_selection_missing_a_requirement_is_refused_naming_what_would_meet_it():
    with pytest.raises(ValueError, match=r"'select' requires 'sites'.*structured.*precision.*tucker"):
        select_passes(passes.pipeline(), ["select"], approximate=True)
    with pytest.raises(ValueError, match=r"'select' requires 'sites'"):  # before anything is traced
        tcomp.compile(MLP(), tolerance=0.1, calibration=[torch.randn(2, 16)] * 2,
                      passes={"structured": False, "precision": False, "tucker": False})
    assert [p.name for p in select_passes(passes.pipeline(), ["precision", "select"])] == ["precision", "select"]
    unplanned = tcomp.compile(MLP().eval(), torch.randn(2, 16), passes={"contraction_order": False}, strict=True)
    assert all(op.plan is None for op in unplanned.program.ops if hasattr(op, "plan"))  # each Network one einsum


def test_one_pass_name_is_one_pass_not_its_letters():
    assert [p.name for p in select_passes(passes.pipeline(), "cse")] == ["cse"]
    with pytest.raises(ValueError, match="unknown pass"):
        tcomp.compile(MLP(), passes=["cse", "fuse_network"])  # misspelt: refused up front, strict or not


def _program() -> Program:
    return tcomp.compile(MLP().eval(), torch.randn(2, 16), passes=[], strict=True).program


def test_a_pass_that_does_not_ensure_what_it_claims_is_caught():
    liar = Pass("liar", lambda p, ctx: (p, PassReport("liar")), ensures=("planned",))
    with pytest.raises(RuntimeError, match="'liar' ensures \\['planned'\\]"):
        run_passes(_program(), [liar], PassContext((), False))


def test_a_requirement_lost_on_the_way_is_caught_before_the_pass_runs():
    from tcomp.passes import contraction_order

    def unplan(program, ctx):
        new = program.copy()
        new.ops = [op.replace(plan=None) if hasattr(op, "plan") else op for op in new.ops]
        return new, PassReport("unplan", changed=True)

    reader = Pass("reader", lambda p, ctx: (p, PassReport("reader")), requires=("planned",))
    run_passes(_program(), [contraction_order.PASS, reader], PassContext((), False))
    with pytest.raises(RuntimeError, match="'reader' requires \\['planned'\\]"):
        run_passes(_program(), [contraction_order.PASS, Pass("unplan", unplan), reader], PassContext((), False))


def test_unknown_properties_are_refused():
    with pytest.raises(ValueError, match="unknown properties"):
        Pass("x", lambda p, ctx: (p, PassReport("x")), requires=("fused",))
