"""The command line's bad input: each case exits with status 2 and one ``tcomp: `` line that names the problem (and,
for the user's code, the file and line), never a traceback."""
import subprocess
import sys
import textwrap

import pytest

from tcomp.cli.main import main

LINEAR = """
    import torch
    def make():
        return torch.nn.Linear(4, 3)
"""


def write(tmp_path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def error_line(capsys, argv: list[str]) -> str:
    """Run the CLI on ``argv``; check that it exits 2 with one ``tcomp: `` line on stderr and return that line."""
    try:
        status = main(argv)
    except SystemExit as e:  # option errors exit as argparse's do
        status = e.code
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcomp: "), err
    return lines[0]


def test_a_syntax_error_names_the_file_and_line(tmp_path, capsys):
    f = write(tmp_path, "cli_syntax.py", """
        import torch
        def make(:
            return torch.nn.Linear(4, 3)
    """)
    assert error_line(capsys, ["inspect", f"{f}:make"]) == f"tcomp: syntax error at {f}:3: invalid syntax"


def test_a_factory_that_raises_names_the_exception_and_line_as_a_command(tmp_path):
    f = write(tmp_path, "cli_raises.py", """
        import torch
        def make():
            raise ValueError("no weights here")
    """)
    proc = subprocess.run([sys.executable, "-m", "tcomp.cli", "inspect", "cli_raises.py:make"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr == f"tcomp: cli_raises.py:make raised ValueError: no weights here ({f}:4)\n"


def test_an_exception_while_importing_the_file_names_the_line(tmp_path, capsys):
    f = write(tmp_path, "cli_import.py", "import torch\nimport no_such_module_here\n")
    line = error_line(capsys, ["inspect", f"{f}:make"])
    assert line == (f"tcomp: importing {f} raised ModuleNotFoundError: No module named 'no_such_module_here' "
                    f"({f}:2)")


def test_a_missing_factory(tmp_path, capsys):
    f = write(tmp_path, "cli_nofactory.py", LINEAR)
    assert error_line(capsys, ["inspect", f"{f}:build", "--input", "2x4"]) == f"tcomp: {f} has no callable 'build'"


def test_a_missing_file(tmp_path, capsys):
    f = tmp_path / "nowhere.py"
    assert error_line(capsys, ["inspect", f"{f}:make"]) == f"tcomp: no such file: {f}"


def test_a_directory_is_not_a_python_file(tmp_path, capsys):
    assert error_line(capsys, ["inspect", f"{tmp_path}:make"]) == f"tcomp: {tmp_path} is not a Python file"


def test_a_factory_returning_neither_a_model_nor_a_pair(tmp_path, capsys):
    f = write(tmp_path, "cli_notmodel.py", "def make():\n    return 3\n")
    line = error_line(capsys, ["inspect", f"{f}:make", "--input", "2x4"])
    assert line == f"tcomp: {f}:make returned int; expected an nn.Module or (nn.Module, example_inputs)"


def test_a_wrong_input_shape_is_eagers_error(tmp_path, capsys):
    f = write(tmp_path, "cli_shape.py", LINEAR)
    line = error_line(capsys, ["inspect", f"{f}:make", "--input", "8x5"])
    assert line == "tcomp: the model rejects the inputs (float32[8, 5]): mat1 and mat2 shapes cannot be multiplied " \
                   "(8x5 and 4x3)"


def test_an_error_in_the_users_forward_names_its_line(tmp_path, capsys):
    f = write(tmp_path, "cli_forward.py", """
        import torch
        class Net(torch.nn.Module):
            def forward(self, x):
                return x @ torch.ones(4, 2)
        def make():
            return Net(), torch.randn(2, 3)
    """)
    line = error_line(capsys, ["inspect", f"{f}:make"])
    assert line.startswith("tcomp: the model rejects the inputs (float32[2, 3]): mat1 and mat2 shapes")
    assert line.endswith(f"(at {f}:5)")


def test_an_integer_input_for_a_float_model_is_rejected_before_compiling(tmp_path, capsys):
    f = write(tmp_path, "cli_int.py", LINEAR)
    line = error_line(capsys, ["inspect", f"{f}:make", "--input", "8x4:int64"])
    assert line == "tcomp: the model rejects the inputs (int64[8, 4]): mat1 and mat2 must have the same dtype, " \
                   "but got Long and Float"


def test_integer_token_ids_still_work(tmp_path, capsys):
    f = write(tmp_path, "cli_tokens.py", """
        import torch
        def make():
            return torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 3))
    """)
    assert main(["inspect", f"{f}:make", "--input", "2x5:int64"]) == 0
    assert "(inputs: int64[2, 5])" in capsys.readouterr().out


@pytest.mark.parametrize("spec, detail", [
    ("8xq", "bad input spec '8xq': expected sizes separated by 'x'"),
    ("8x-3", "bad input spec '8x-3': sizes must be positive"),
    ("8x3:float7", "bad input spec '8x3:float7': unknown dtype 'float7'"),
])
def test_a_malformed_input_spec(tmp_path, capsys, spec, detail):
    f = write(tmp_path, "cli_spec.py", LINEAR)
    assert error_line(capsys, ["inspect", f"{f}:make", "--input", spec]).startswith(f"tcomp: {detail}")


@pytest.mark.parametrize("argv", [["inspect", "zoo:mlp"], ["bench", "zoo:mlp"]])
@pytest.mark.parametrize("batch", ["0", "-4"])
def test_a_batch_that_is_not_positive(capsys, argv, batch):
    line = error_line(capsys, [*argv, "--batch", batch])
    assert line == f"tcomp: --batch must be a positive integer, got {batch}"


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_bench_rounds_that_are_not_positive_fail_before_any_model_is_built(capsys, rounds):
    line = error_line(capsys, ["bench", "zoo:resnet50", "--rounds", rounds])  # the [1/1] progress line never shows
    assert line == f"tcomp: --rounds must be a positive integer, got {rounds}"


def test_passes_and_disable_together_exit_2(capsys):
    line = error_line(capsys, ["inspect", "zoo:mlp", "--passes", "cse", "--disable", "layout"])
    assert line == "tcomp: use --passes or --disable, not both"


def test_bench_checks_every_target_before_timing_any(tmp_path, capsys):
    f = write(tmp_path, "cli_bench.py", LINEAR)
    line = error_line(capsys, ["bench", "zoo:mlp", f"{f}:make", "--rounds", "1"])
    assert line == f"tcomp: {f}:make: no example inputs; pass --input SHAPE (e.g. --input 8x3x224x224)"


@pytest.mark.parametrize("where", ["missing/folder/out.json", "."])
def test_bench_checks_the_json_path_before_timing_anything(tmp_path, capsys, where):
    path = str(tmp_path / where)
    line = error_line(capsys, ["bench", "zoo:mlp", "--rounds", "1", "--json", path])
    assert line.startswith(f"tcomp: --json {path}: cannot write there")


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``tcomp zoo | head -0``: the pipe closes before tcomp writes; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "tcomp.cli", "zoo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
