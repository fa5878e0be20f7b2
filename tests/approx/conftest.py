"""Fixtures of the approximate-compilation tests."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def private_measurement_cache(tmp_path_factory):
    """Option measurements persist on disk (tcomp.approx.measurements, in the cache of tcomp.cache): keep the tests'
    own out of the user's cache, and start every test session without them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TCOMP_CACHE_DIR", str(tmp_path_factory.mktemp("tcomp-cache")))
        yield
