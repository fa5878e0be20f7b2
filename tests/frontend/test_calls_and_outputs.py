"""How a call reaches ``forward`` and how its results come back, as libraries write them: decorators that fill in
keyword arguments (Hugging Face's ``@can_return_tuple`` and friends) and outputs that are dict subclasses or
dataclasses (``ModelOutput``)."""
import functools
import inspect
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
import torch
import torch.nn as nn
import torch.utils._pytree as pytree
from hypothesis import given, settings

import tcomp


def fills_in_use_cache(forward):
    """A decorator in the style of transformers': it takes ``*args, **kwargs`` and sets a keyword itself."""
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        kwargs["use_cache"] = kwargs.get("use_cache") or False
        return forward(self, *args, **kwargs)
    return wrapper


class Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    @fills_in_use_cache
    def forward(self, x, mask=None, scale=None, use_cache=None):
        y = self.lin(x)
        return y if mask is None else y * mask


@dataclass
class Output(OrderedDict):
    """A dict subclass and a dataclass, registered as a pytree node: how ``ModelOutput`` is built."""

    hidden: torch.Tensor = None
    pooled: torch.Tensor = None

    def __post_init__(self):
        for k in ("hidden", "pooled"):
            if getattr(self, k) is not None:
                self[k] = getattr(self, k)


pytree.register_pytree_node(Output, lambda o: (list(o.values()), list(o.keys())),
                            lambda values, keys: Output(**dict(zip(keys, values))),
                            flatten_with_keys_fn=lambda o: ([(pytree.MappingKey(k), v) for k, v in o.items()],
                                                            list(o.keys())))


class Structured(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        return Output(hidden=h, pooled=h.mean(1))


def _compiled_without_warning(model, *args, **kwargs):
    compiled = tcomp.compile(model, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", tcomp.TcompWarning)
        return compiled, compiled(*args, **kwargs)


@pytest.mark.parametrize("call", ["positional", "keyword", "mask"])
def test_a_decorator_that_sets_a_keyword_itself(call):
    model, x = Decorated().eval(), torch.randn(2, 5, 4)
    args, kwargs = {"positional": ((x,), {}), "keyword": ((), {"x": x}),
                    "mask": ((x,), {"mask": torch.rand(2, 5, 3)})}[call]
    compiled, out = _compiled_without_warning(model, *args, **kwargs)
    torch.testing.assert_close(out, model(*args, **kwargs))
    assert compiled.report.status == "compiled"


def test_a_model_output_comes_back_in_its_own_type():
    model, x = Structured().eval(), torch.randn(3, 5, 4)
    compiled, out = _compiled_without_warning(model, x)
    ref = model(x)
    assert type(out) is Output and list(out.keys()) == list(ref.keys())
    torch.testing.assert_close(out.hidden, ref.hidden)
    torch.testing.assert_close(out["pooled"], ref["pooled"])
    out2 = compiled(torch.randn(6, 5, 4))  # another batch: the same structure
    assert type(out2) is Output and out2.pooled.shape == (6, 4)


def renames_old_to_new(forward):
    """transformers' ``deprecate_kwarg`` in miniature: ``bias_old`` becomes ``bias``; given both, the new wins."""
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        if "bias_old" in kwargs:
            old = kwargs.pop("bias_old")
            kwargs.setdefault("bias", old)
        return forward(self, *args, **kwargs)
    return wrapper


class Renamed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    @renames_old_to_new
    def forward(self, x, bias=None, **kwargs):
        return self.lin(x) if bias is None else self.lin(x) + bias


def test_a_default_the_call_left_out_is_left_out_again():
    """Passed back as ``bias=None``, the default hid the user's ``bias_old`` from the decorator (error 10)."""
    model, x, bias = Renamed().eval(), torch.randn(2, 4), torch.full((3,), 10.0)
    compiled, out = _compiled_without_warning(model, x, bias_old=bias)
    torch.testing.assert_close(out, model(x, bias_old=bias))


def test_binding_all_positional_arguments_keeps_varargs_apart():
    """The fast path for calls that pass every parameter by position must not take ``*xs`` for one parameter."""
    import inspect

    from tcomp.frontend.arguments import Arguments

    t = torch.zeros(1)

    def varargs(*xs):
        return xs

    def fixed(x, y=2):
        return x

    bound = Arguments.bind(inspect.signature(varargs), (t,), {})
    assert bound.names == ("xs_0",) and not bound.fixed_arity and bound.values[0] is t
    bound = Arguments.bind(inspect.signature(fixed), (t, 3), {})
    assert bound.names == ("x", "y") and bound.fixed_arity and bound.values == (t, 3) and bound.given == (True, True)
    assert bound.call_args() == ((t, 3), {})


_KINDS = [inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL,
          inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD]


@settings(max_examples=200)
@given(kinds=st.lists(st.sampled_from(_KINDS), max_size=5), defaults=st.integers(0, 5), n_args=st.integers(0, 6))
def test_the_fast_binding_of_positional_calls_is_the_general_one(kinds, defaults, n_args):
    """``Positional.bind`` (a call's fast path) gives what ``Signature.bind`` gives, for any signature and number of
    positional arguments, or declines."""
    from tcomp.frontend.arguments import Arguments, Positional

    order = sorted(set(kinds), key=_KINDS.index) if kinds else []
    params, seen_default = [], False
    for k, kind in enumerate(order):
        default = inspect.Parameter.empty
        if kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            seen_default = seen_default or k >= len(order) - defaults
            default = k if seen_default else inspect.Parameter.empty
        params.append(inspect.Parameter(f"p{k}", kind, default=default))
    signature = inspect.Signature(params)
    args = tuple(range(100, 100 + n_args))
    fast = Positional.of(signature).bind(args)
    try:
        general = Arguments.bind(signature, args, {}, positional=Positional())
    except TypeError:  # the call does not bind: the fast path must not have accepted it
        assert fast is None
        return
    assert fast is None or fast == general
