"""Measured layer times (tcomp.layertime): an option timed in turns with the dense op it would replace, as a
ratio; a reference time cached under load is lowered by a later, quieter measurement instead of kept for good."""
import torch

from tcomp.approx import option_time as layertime
from tcomp.approx.sites import with_dtype
from tcomp.ir.program import Network, Value


def _linear(d_in=256, d_out=256, rows=512):
    x = Value("x", (rows, d_in), torch.float32, kind="input")
    w = Value("w", (d_out, d_in), torch.float32, kind="const", data=torch.randn(d_out, d_in))
    out = Value("y", (rows, d_out), torch.float32)
    # y[a,b] = Σ_c x[a,c] · w[b,c]
    return Network(out, (x, w), ((("a",), ("c",)), (("b",), ("c",))), (("a",), ("b",)),
                   {"a": rows, "b": d_out, "c": d_in}, origin="linear")


def test_the_ratio_is_cached_and_an_inflated_reference_time_is_lowered(monkeypatch):
    monkeypatch.setattr(layertime, "_CACHE", {})
    monkeypatch.setattr(layertime, "_store", lambda key, value: layertime._CACHE.__setitem__(key, value))
    dense = _linear()
    half = with_dtype(dense, torch.bfloat16)
    ref_key = layertime.signature(layertime.subprogram([dense], None), 1)
    layertime._CACHE[ref_key] = 10.0  # measured once while the machine was busy
    runs = []
    real = layertime._runnable
    monkeypatch.setattr(layertime, "_runnable", lambda *a: runs.append(a) or real(*a))
    ratio = layertime.time_against([half], [dense], None)
    assert 0 < ratio < 10 and len(runs) == 2
    assert layertime.time_ops([dense], None) < 10.0  # lowered to the fastest seen in turns
    assert layertime.time_against([half], [dense], None) == ratio and len(runs) == 2  # from the cache
