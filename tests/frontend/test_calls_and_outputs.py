"""How a call reaches ``forward`` and how its results come back, as libraries write them: decorators that fill in
keyword arguments (Hugging Face's ``@can_return_tuple`` and friends) and outputs that are dict subclasses or
dataclasses (``ModelOutput``)."""
import functools
import inspect
import re
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
    """A call that passes every parameter by position must not take ``*xs`` for one parameter."""
    from tcomp.frontend.arguments import Binder

    t = torch.zeros(1)

    def varargs(*xs):
        return xs

    def fixed(x, y=2):
        return x

    bound = Binder(inspect.signature(varargs)).bind((t,), {})
    assert bound.names == ("xs_0",) and not bound.fixed_arity and bound.values[0] is t
    bound = Binder(inspect.signature(fixed)).bind((t, 3), {})
    assert bound.names == ("x", "y") and bound.fixed_arity and bound.values == (t, 3) and bound.given == (True, True)
    assert bound.call_args() == ((t, 3), {})


_KINDS = [inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL,
          inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD]


@st.composite
def _signatures_and_calls(draw):
    counts = [draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 1)), draw(st.integers(0, 2)),
              draw(st.integers(0, 1))]
    kinds = [kind for kind, n in zip(_KINDS, counts) for _ in range(n)]
    positional = sum(counts[:2])
    first_default = draw(st.integers(0, positional))
    params = []
    for k, kind in enumerate(kinds):
        default = inspect.Parameter.empty
        if (kind in _KINDS[:2] and k >= first_default) or (kind == _KINDS[3] and draw(st.booleans())):
            default = -k
        params.append(inspect.Parameter(f"p{k}", kind, default=default))
    names = [f"p{k}" for k in range(len(kinds))] + ["extra", "more"]
    keywords = draw(st.lists(st.sampled_from(names), unique=True, max_size=4))
    return inspect.Signature(params), draw(st.integers(0, 5)), keywords


@settings(max_examples=300)
@given(case=_signatures_and_calls())
def test_the_fast_binding_is_the_general_one(case):
    """``Binder.bind`` (a call's fast path, which remembers how each shape of call binds) gives what
    ``Signature.bind`` gives, for any signature and call — on the call that taught it the shape and on a later one
    with other values — and raises the same TypeError where the call does not bind."""
    from tcomp.frontend.arguments import Arguments, Binder

    signature, n_args, keywords = case
    binder = Binder(signature)
    for base in (100, 200):
        args = tuple(range(base, base + n_args))
        kwargs = {k: base + 50 + j for j, k in enumerate(keywords)}
        try:
            general = Arguments.bind(signature, args, kwargs)
        except TypeError as err:
            with pytest.raises(TypeError, match=re.escape(str(err))):
                binder.bind(args, kwargs)
            return
        assert binder.bind(args, kwargs) == general
