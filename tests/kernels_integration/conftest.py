"""The Triton interpreter for this directory's tests (it must be set before kernels are defined; tcomp.codegen.kernels
defines them on first use, so setting it here, per test, is enough — and it is restored afterwards)."""
import os

import pytest


@pytest.fixture(autouse=True)
def triton_interpreter():
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    yield
    if old is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = old
