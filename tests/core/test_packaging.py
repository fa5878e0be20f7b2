"""``passes/`` (top level) is importable as ``tcomp.passes`` from a built wheel and from the editable install."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tcomp.passes

ROOT = Path(__file__).resolve().parents[2]


def test_editable_install_maps_passes(tmp_path):
    # from outside the repository, so that nothing but the installed package can be found
    code = "import tcomp.passes, tcomp.passes.contraction_order as c; print(tcomp.passes.__file__, c.NAME)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    path, name = out.stdout.split()
    assert Path(path) == ROOT / "passes" / "__init__.py" and name == "contraction_order"
    assert Path(tcomp.passes.__file__).parent == ROOT / "passes"


def test_wheel_contains_and_imports_tcomp_passes(tmp_path):
    source = tmp_path / "source"  # a copy, so that no build/ folder left in the checkout can stand in for a module
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".ci-venv", "build", "*.egg-info", "__pycache__", "tests", "bench", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("tcomp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    stages = ("ir/program.py", "cost/machine.py", "contract/search.py", "codegen/kernels/contraction.py",
              "frontend/lower.py", "rewrite/weights.py", "approx/factorize/lowrank.py", "remat/solve.py",
              "cli/__main__.py", "zoo/__init__.py", "api.py", "version.py")
    for f in ("tcomp/passes/__init__.py", "tcomp/passes/contraction_order.py", "tcomp/passes/fuse_networks.py",
              "tcomp/passes/rematerialize/training.py", *(f"tcomp/{s}" for s in stages)):
        assert f in names, f
    assert not any(n.startswith("passes/") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    env = dict(os.environ, PYTHONPATH=str(unpacked))
    code = "import tcomp.passes; print(tcomp.passes.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)
    assert Path(out.stdout.strip()).is_relative_to(unpacked)
