"""The package's layout holds: no import circles (function-level imports included, so none can hide one), and every
stage imports only the stages below it (docs/architecture.md). Read from the source with ``ast``, not by importing."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]

#: what each stage may import besides itself: the one direction of docs/architecture.md
ALLOWED = {
    "tcomp.version": set(), "tcomp.timing": set(), "tcomp.numerics": set(), "tcomp.cache": set(),
    "tcomp.ir": set(), "tcomp.remat": set(), "tcomp.zoo": set(), "tcomp.distributed": set(),
    "tcomp.cost": {"tcomp.ir", "tcomp.cache", "tcomp.timing"},
    "tcomp.contract": {"tcomp.ir", "tcomp.cost"},
    "tcomp.frontend": {"tcomp.ir"},
    "tcomp.codegen": {"tcomp.ir", "tcomp.cost", "tcomp.contract", "tcomp.timing"},
    "tcomp.rewrite": {"tcomp.ir", "tcomp.codegen"},
    "tcomp.approx": {"tcomp.ir", "tcomp.cost", "tcomp.contract", "tcomp.codegen", "tcomp.frontend", "tcomp.cache",
                     "tcomp.timing", "tcomp.version"},
    "tcomp.options": {"tcomp.approx", "tcomp.remat"},
    "tcomp.passmanager": {"tcomp.ir", "tcomp.cost", "tcomp.contract", "tcomp.approx", "tcomp.options"},
    "tcomp.report": {"tcomp.ir", "tcomp.passmanager"},
    "tcomp.passes": {"tcomp.ir", "tcomp.cost", "tcomp.contract", "tcomp.codegen", "tcomp.frontend", "tcomp.rewrite",
                     "tcomp.approx", "tcomp.remat", "tcomp.options", "tcomp.passmanager", "tcomp.cache",
                     "tcomp.timing", "tcomp.distributed"},
    "tcomp.pipeline": {"tcomp.ir", "tcomp.cost", "tcomp.approx", "tcomp.codegen", "tcomp.frontend", "tcomp.numerics",
                       "tcomp.options", "tcomp.passes", "tcomp.passmanager", "tcomp.report", "tcomp.timing",
                       "tcomp.distributed", "tcomp.cache"},
    "tcomp.api": {"tcomp.ir", "tcomp.approx", "tcomp.codegen", "tcomp.frontend", "tcomp.options", "tcomp.pipeline",
                  "tcomp.report", "tcomp.distributed"},
    "tcomp": {"tcomp.api", "tcomp.approx", "tcomp.frontend", "tcomp.passmanager", "tcomp.version"},
    "tcomp.dynamo_backend": {"tcomp.api", "tcomp.frontend"},
    "tcomp.cli": {"tcomp", "tcomp.ir", "tcomp.zoo", "tcomp.remat", "tcomp.passes", "tcomp.passmanager",
                  "tcomp.options", "tcomp.numerics", "tcomp.timing"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for package, folder in (("tcomp", ROOT / "tcomp"), ("tcomp.passes", ROOT / "passes")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([package, *parts])] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The tcomp modules ``name`` imports, anywhere in the file; ``from pkg import sub`` counts as ``pkg.sub``
    when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
    return {m for m in found if m in mods}


def _graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        g.add_edges_from((name, m) for m in _imports(name, path, mods) if m != name)
    return g


def _stage(module: str) -> str:
    """The stage a module belongs to: the longest key of ALLOWED it is in."""
    return max((s for s in ALLOWED if module == s or module.startswith(s + ".")), key=len)


def test_no_import_circles():
    g = _graph()
    circles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not circles, f"import circles: {circles}"


def test_every_stage_imports_only_the_stages_below_it():
    g = _graph()
    wrong = sorted(f"{a} imports {b}" for a, b in g.edges
                   if _stage(a) != _stage(b) and _stage(b) not in ALLOWED[_stage(a)])
    assert not wrong, "\n".join(wrong)


def test_no_pass_imports_another_pass():
    """Shared machinery lives in a library, never in a pass that others import (the pipeline and the CLI list the
    passes; a pass package's own modules may import each other)."""
    def pass_of(module: str) -> str | None:  # tcomp.passes.rematerialize.training -> tcomp.passes.rematerialize
        parts = module.split(".")
        return ".".join(parts[:3]) if parts[:2] == ["tcomp", "passes"] and len(parts) > 2 else None

    wrong = sorted(f"{a} imports {b}" for a, b in _graph().edges
                   if pass_of(a) is not None and pass_of(b) is not None and pass_of(a) != pass_of(b))
    assert not wrong, "\n".join(wrong)


def test_every_module_is_in_a_stage_and_says_what_it_is():
    for name, path in _modules().items():
        assert _stage(name), name
        tree = ast.parse(path.read_text())
        if path.name != "__main__.py":
            assert ast.get_docstring(tree), f"{name} has no docstring"


def test_the_checks_find_what_they_look_for():
    """The graph reader sees relative and function-level imports (the pipeline imports the rematerialize pass inside
    a function), and a circle through one would not pass."""
    mods = _modules()
    edges = _imports("tcomp.ir.program", mods["tcomp.ir.program"], mods)
    assert "tcomp.ir.ops" in edges and "tcomp.ir.printer" in edges
    assert "tcomp.passes.rematerialize.training" in _imports("tcomp.pipeline", mods["tcomp.pipeline"], mods)
    g = _graph()
    g.add_edge("tcomp.ir.ops", "tcomp.ir.program")
    assert any(len(c) > 1 for c in nx.strongly_connected_components(g))


def test_the_pass_docs_architecture_shows_how_to_write_runs():
    """docs/architecture.md's "Writing a pass" example is real code: it drops a multiplication by one, exactly."""
    import re
    import types

    import torch

    import tcomp
    from tcomp.codegen.emit import emit
    from tcomp.passmanager import PassContext

    doc = (ROOT / "docs" / "architecture.md").read_text()
    module = types.ModuleType("drop_ones")
    exec(re.search(r"```python\n(\"\"\"drop_ones.*?)```", doc, re.S).group(1), module.__dict__)

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.relu(self.fc(x) * 1.0)

    model, x = Scaled().eval(), torch.randn(3, 8)
    program = tcomp.compile(model, x, passes=["fuse_networks"], strict=True).program
    new, report = module.PASS.run(program, PassContext((x,), False))
    assert report.changed and "mul(acc, 1)" in program.format() and "mul(acc" not in new.format()
    torch.testing.assert_close(emit(new)(x), model(x))
