"""Fixtures of the rewrite-pass tests."""
import pytest

import tcomp.passes


@pytest.fixture
def use_passes(monkeypatch):
    """``use_passes([...])`` makes ``tcomp.compile`` run exactly these passes."""

    def install(passes) -> None:
        monkeypatch.setattr(tcomp.passes, "pipeline", lambda: list(passes))

    return install


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    """Layout measurements go to a fresh cache directory; the machine model uses fixed constants."""
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TCOMP_CALIBRATION", "default")
