"""Where kernels run, how they are cached and tuned, and the sm_90 compilation check (no GPU needed)."""
import importlib.util

import pytest
import torch

from tcomp.codegen.kernels import contraction, monarch, runtime, triton_available
from tcomp.codegen.kernels.epilogue import Epilogue


def test_triton_availability_follows_the_interpreter_setting(monkeypatch):
    assert triton_available("cpu") and triton_available(torch.device("cpu")) and triton_available()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_available("cpu")
    assert triton_available("cuda") == torch.cuda.is_available()
    assert not triton_available("meta")


def test_kernels_are_cached_per_source_and_mode():
    spec = contraction.contraction_spec((1, 1, 1, 1), ())
    assert contraction.contraction_spec((1, 1, 1, 1), ()) is spec
    first = runtime._tuned_kernel(spec, "interpreter")
    assert runtime._tuned_kernel(spec, "interpreter") is first
    assert runtime._tuned_kernel(spec, "NVIDIA H100 (sm_90)") is not first


def test_size_buckets():
    assert [runtime.size_bucket(n) for n in (0, 1, 2, 3, 16, 17, 4096, 5000)] == [1, 1, 2, 4, 16, 32, 4096, 8192]


def test_contraction_pruning_drops_tiles_larger_than_the_problem():
    small = contraction.prune_configs(contraction.CONFIGS, {"tune_m": 16, "tune_n": 256, "tune_k": 64})
    assert [c.block["BLOCK_M"] for c in small] == [16]
    tiny = contraction.prune_configs(contraction.CONFIGS, {"tune_m": 1, "tune_n": 1, "tune_k": 1})
    assert len(tiny) == 1
    assert contraction.prune_configs(contraction.CONFIGS, {"tune_m": 8192, "tune_n": 8192, "tune_k": 8192}) == list(
        contraction.CONFIGS)


def test_monarch_pruning_shrinks_tiles_to_the_problem():
    args = {"tune_rows": 8, "size_j": 5, "size_k": 40, "size_i": 20, "size_l": 3}
    shrunk = monarch.prune_configs(monarch.CONFIGS, args)
    assert all(c.block["BLOCK_ROWS"] == 16 and c.block["BLOCK_J"] == 16 and c.block["BLOCK_L"] == 16 for c in shrunk)
    assert all(c.block["BLOCK_I"] <= 32 for c in shrunk) and len(set(shrunk)) == len(shrunk)


def test_float32_uses_tf32_only_where_torch_would(monkeypatch):
    assert runtime.dot_precision(torch.float16) == "ieee"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    allowed = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert runtime.dot_precision(torch.float32) == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = False
        assert runtime.dot_precision(torch.float32) == "ieee"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def _nvidia_toolchain() -> bool:
    return importlib.util.find_spec("triton.backends.nvidia") is not None


@pytest.mark.skipif(not _nvidia_toolchain(), reason="triton's NVIDIA backend is not installed")
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
def test_kernels_compile_for_hopper_without_spilling():
    """The GPU path, compiled offline for sm_90 with a configuration each: the contraction with an epilogue uses
    wgmma, and neither kernel spills registers."""
    from tcomp.codegen.kernels.offline import compile_for_target

    meta = {"device": "meta", "dtype": torch.float16}
    launch = contraction.plan_contraction("btd,fd->btf", torch.empty(4, 512, 1024, **meta),
                                          torch.empty(4096, 1024, **meta),
                                          epilogue=Epilogue().bias(torch.empty(4096, **meta)).activation("gelu"))
    gemm = compile_for_target(launch, contraction.CONFIGS[3])
    assert gemm.uses_wgmma and not gemm.spills and gemm.registers <= 255
    x, R, L = torch.empty(8192, 4096, **meta), torch.empty(64, 64, 64, **meta), torch.empty(64, 64, 64, **meta)
    launch = monarch.plan_block_tensor_train("monarch", x, L.unsqueeze(-1), R.unsqueeze(-1), None, None)
    fused = compile_for_target(launch, monarch.prune_configs(monarch.CONFIGS, launch.values)[0])
    assert not fused.spills and fused.shared_bytes > 0
