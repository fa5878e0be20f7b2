"""The tcomp command line, end to end on small models."""
import json
import subprocess
import sys
import textwrap

import pytest

from tcomp.cli.main import main


def test_zoo_lists_every_model(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in ("mlp", "resnet18", "mps_classifier", "peps", "monarch_mlp"):
        assert name in out


def test_inspect_text_shows_each_pass_costs_trees_and_code(capsys):
    assert main(["inspect", "zoo:mlp", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "-- lowered --" in out and "-- after fuse_networks --" in out and "-- after contraction_order --" in out
    # either orientation of the first layer's GEMM: at batch 2 which is faster is measured on the machine
    assert "flop" in out and ("mm(x, layers.0.weight)" in out or "mm(layers.0.weight, x)" in out)
    assert "-- emitted code --" in out and "def forward(self, x):" in out and "torch.addmm" in out


def test_inspect_json(capsys):
    assert main(["inspect", "zoo:tt_net", "--batch", "2", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [s["after"] for s in d["snapshots"]] == ["lowered", "cse", "algebraic", "select_through",
                                                    "fuse_networks", "fold_bn", "conv_calls", "epilogue",
                                                    "batch_siblings", "layout", "contraction_order", "triton_codegen"]
    assert d["report"]["status"] == "compiled" and "def forward" in d["code"]


def test_inspect_with_a_disabled_pass(capsys):
    assert main(["inspect", "zoo:mlp", "--batch", "2", "--disable", "fuse_networks"]) == 0
    assert "after fuse_networks" not in capsys.readouterr().out


def test_an_unknown_pass_exits_2_naming_the_passes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["inspect", "zoo:mlp", "--batch", "2", "--passes", "capture"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown pass(es) ['capture']" in err and "contraction_order" in err and "Traceback" not in err


def test_inspect_a_file_target_with_input_spec(tmp_path, capsys):
    f = tmp_path / "mymodel.py"
    f.write_text(textwrap.dedent("""
        import torch
        def make():
            return torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    """))
    assert main(["inspect", f"{f}:make", "--input", "4x12"]) == 0
    assert "program Sequential(input_1: f32[B,12])" in capsys.readouterr().out


def test_bad_targets_exit_2_with_a_message(tmp_path, capsys):
    assert main(["inspect", "zoo:nope"]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["inspect", "justaname"]) == 2
    assert "zoo:NAME" in capsys.readouterr().err
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef make():\n    return torch.nn.Linear(3, 3)\n")
    assert main(["inspect", f"{f}:make"]) == 2
    assert "--input" in capsys.readouterr().err
    assert main(["inspect", f"{f}:make", "--input", "3xq"]) == 2


def test_bench_prints_the_table(capsys):
    assert main(["bench", "zoo:equivariant_tp", "--batch", "4", "--no-torch-compile", "--no-inductor",
                 "--rounds", "1"]) == 0
    captured = capsys.readouterr()
    assert "equivariant_tp" in captured.out and "tcomp (eager) ms (×eager)" in captured.out
    assert "[1/1] zoo:equivariant_tp" in captured.err  # progress goes to stderr


def test_bench_with_torch_compile_as_a_command(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "tcomp.cli", "bench", "zoo:mlp", "--batch", "4", "--rounds", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    names = [v["name"] for v in rows[0]["variants"]]
    assert names == ["eager", "torch.compile", "tcomp (eager)", "tcomp (inductor)"]
    assert all(v["error"] is None for v in rows[0]["variants"])
    assert rows[0]["variants"][2]["max_rel_err"] < 1e-4 and rows[0]["variants"][3]["max_rel_err"] < 1e-4
