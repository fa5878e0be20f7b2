"""Run tests/kernels on CPU under Triton's interpreter.

``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates a kernel; tcomp.codegen.kernels defines its kernels on first
use and keys its kernel cache on the interpreter setting, so the setting at call time decides. This fixture therefore
turns the interpreter on around each module of this directory only and restores the environment afterwards: it does not
leak into other test directories, and importing tcomp.codegen.kernels earlier is harmless.
"""
import pytest

pytest.importorskip("triton")


@pytest.fixture(autouse=True, scope="module")
def triton_interpreter():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        yield
