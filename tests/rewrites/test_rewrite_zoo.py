"""Zoo models with every rewrite pass in the pipeline (layout fixed to channels-last, so that it rewrites every CNN
without measuring): forward results equal eager, each rewrite changes what it should, and a model where nothing
applies comes out unchanged.

Gradients through the rewrites are checked on the targeted models of the other files (a ResNet bottleneck block
with every rewrite in test_rewrite_layout.py); ``tests/core/test_zoo_compiled.py`` checks float64 gradients of
every zoo model with the registered pipeline — too slow to repeat within this directory's time budget."""
import pytest
from rewrites_helpers import assert_forward_equal, compiled, report_of, simplify_passes

from tcomp.zoo import get_entry

REWRITES = ("cse", "fold_bn", "conv_calls", "algebraic", "epilogue", "layout")
CHANGED_BY = {"resnet18": {"fold_bn", "layout"}, "resnet50": {"fold_bn", "conv_calls", "layout"},
              "vit_tiny": {"epilogue", "layout"}, "minilm": {"cse", "epilogue"}, "mlp": set()}


@pytest.mark.parametrize("name", list(CHANGED_BY))
def test_zoo_model_equals_eager_with_the_rewrites(name, use_passes):
    use_passes(simplify_passes("channels_last"))
    entry = get_entry(name)
    model = entry.build()
    inputs = entry.example_inputs(batch=2)
    c = compiled(model, *inputs)
    assert {p for p in REWRITES if report_of(c, p).changed} == CHANGED_BY[name]
    assert_forward_equal(model, c, *inputs)

