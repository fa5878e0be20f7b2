"""Measured layer times (tcomp.approx.option_time): an option timed in turns with the dense op it would replace, as
a ratio; a reference time cached under load is lowered by a later, quieter measurement instead of kept for good."""
import torch

from tcomp.approx import option_time
from tcomp.approx.apply import with_dtype
from tcomp.cache import DiskCache
from tcomp.ir import Network, Value, subprogram


def _linear(d_in=256, d_out=256, rows=512):
    x = Value("x", (rows, d_in), torch.float32, kind="input")
    w = Value("w", (d_out, d_in), torch.float32, kind="const", data=torch.randn(d_out, d_in))
    out = Value("y", (rows, d_out), torch.float32)
    # y[a,b] = Σ_c x[a,c] · w[b,c]
    return Network(out, (x, w), ((("a",), ("c",)), (("b",), ("c",))), (("a",), ("b",)),
                   {"a": rows, "b": d_out, "c": d_in}, origin="linear")


def test_the_ratio_is_cached_and_an_inflated_reference_time_is_lowered(monkeypatch, tmp_path):
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path))
    dense = _linear()
    half = with_dtype(dense, torch.bfloat16)
    ref_key = option_time.signature(subprogram([dense], {}), {})
    DiskCache.open("layer-times").put(ref_key, 10.0)  # measured once while the machine was busy
    runs = []
    real = option_time.runnable
    monkeypatch.setattr(option_time, "runnable", lambda *a, **k: runs.append(a) or real(*a, **k))
    ratio = option_time.time_against([half], [dense], {})
    assert 0 < ratio < 10 and len(runs) == 2
    assert option_time.time_ops([dense], {}) < 10.0  # lowered to the fastest seen in turns
    assert option_time.time_against([half], [dense], {}) == ratio and len(runs) == 2  # from the cache
    DiskCache._open.clear()  # a new process reads the same from the file
    assert option_time.time_against([half], [dense], {}) == ratio and len(runs) == 2
