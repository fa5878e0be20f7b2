"""The IR: Network validation, the printed form, dead-code elimination."""
import pytest
import torch

import tcomp
from tcomp.ir import Call, Network, Pointwise, Program, Value


def _v(name, shape, kind="op"):
    return Value(name, shape, torch.float32, kind=kind)


def test_network_checks_index_sizes():
    x, w = _v("x", (4, 6), "input"), _v("w", (5, 6), "const")
    with pytest.raises(ValueError, match="does not match"):
        Network(_v("y", (4, 5)), (x, w), ((("a",), ("b",)), (("c",), ("b",))), (("a",), ("c",)),
                {"a": 4, "b": 7, "c": 5})
    with pytest.raises(ValueError, match="appear in no operand"):
        Network(_v("y", (4, 5)), (x, w), ((("a",), ("b",)), (("c",), ("b",))), (("a",), ("z",)),
                {"a": 4, "b": 6, "c": 5, "z": 5})


def test_grouped_equation_shows_splits():
    x = _v("x", (4, 12), "input")
    n = Network(_v("y", (4, 3, 4)), (x,), ((("a",), ("b", "c")),), (("a",), ("b",), ("c",)),
                {"a": 4, "b": 3, "c": 4})
    assert n.grouped_equation() == "a(bc)->abc"
    assert n.equation() == "abc->abc"
    assert n.is_relabel


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.fc(x)).softmax(-1)


def test_printed_program_has_one_op_a_line_with_types_and_costs():
    c = tcomp.compile(_Tiny().eval(), torch.randn(3, 8))
    text = c.report.snapshots[0][1]
    lines = text.splitlines()
    assert lines[0] == "program _Tiny(x: f32[B,8]) -> f32[B,4]"
    assert "network" in lines[1] and "fc.weight" in lines[1] and "add(acc, fc.bias)" in lines[1]
    assert "f32[B,4]" in lines[1] and "64*B flop" in lines[1]
    assert "pointwise relu" in lines[2]
    assert "call .softmax" in lines[3]
    assert lines[-1].strip() == "return %softmax"
    final = c.program.format()
    assert "mm(x, fc.weight)" in final  # the contraction tree is printed under its network


def test_dead_code_keeps_side_effects():
    x = _v("x", (4,), "input")
    dead_pw = Pointwise(_v("p", (4,)), "relu", torch.relu, (x,))
    inplace = Call(_v("q", (4,)), "add_", "method", (x, 1.0))
    pure_call = Call(_v("r", (4,)), "softmax", "method", (x, -1))
    live = Pointwise(_v("s", (4,)), "neg", torch.neg, (x,))
    prog = Program("p", [x], {}, [dead_pw, inplace, pure_call, live], live.out)
    assert prog.eliminate_dead_code() == 2
    assert prog.ops == [inplace, live]


def test_an_out_argument_is_a_write_only_when_it_is_given():
    from tcomp.ir import is_pure

    x, buf = _v("x", (4,), "input"), _v("buf", (4,), "input")
    normalized = torch.nn.functional.normalize
    assert is_pure(Call(_v("n", (4,)), normalized, "function", (x,), {"dim": -1, "out": None}))
    assert not is_pure(Call(_v("m", (4,)), normalized, "function", (x,), {"dim": -1, "out": buf}))
    assert not is_pure(Call(_v("r", (4,)), torch.relu, "function", (x,), {"inplace": True}))


def test_program_check_finds_use_before_definition():
    x = _v("x", (4,), "input")
    a = Pointwise(_v("a", (4,)), "neg", torch.neg, (x,))
    b = Pointwise(_v("b", (4,)), "neg", torch.neg, (a.out,))
    with pytest.raises(ValueError, match="before it is defined"):
        Program("p", [x], {}, [b, a], b.out).check()
