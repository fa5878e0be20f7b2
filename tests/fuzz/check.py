"""The fuzzing checker: a model compiled with ``tcomp.compile(backend="eager")`` against eager, in float64.

For each case: eager runs first (an error there is a generator bug, counted as ``invalid``); then the model is
compiled on its example inputs and both are run on the example inputs and on fresh inputs of another batch size.
Forward outputs (values, shapes, dtypes) and gradients with respect to every parameter and every input (for a fixed
random cotangent) must agree within :func:`tcomp.numerics.compare`'s float64 tolerance; so must the eager model's
own results after compiling (tcomp must not alter it). A ``TcompWarning`` is a fallback to eager: counted with its
reason, not a failure. An exception from tcomp is a ``crash``.

Eager is not always right. When only the gradients differ, a central difference of eager's forward along a random
direction arbitrates: if it agrees with tcomp's gradients and not with eager's, the case is ``eager_wrong`` (a bug
in a PyTorch backward kernel, reported but not counted against tcomp), else a ``mismatch``.
"""
from __future__ import annotations

import re
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.utils._pytree as pytree

import tcomp
from tcomp.numerics import RTOL, compare

STATUSES = ("ok", "mismatch", "crash", "invalid", "eager_wrong")
FAILURES = ("mismatch", "crash", "invalid")
FLOOR = 1e-3       # see _difference
UNIT_FLOOR = 1e-5  # see _difference
EPS = 1e-5    # the step of the finite difference that arbitrates a gradient mismatch


@dataclass
class Outcome:
    """What one case gave: a status from STATUSES, the fallback reasons seen, whether the example compiled to a
    batch-symbolic program, and for a failure what went wrong."""

    status: str
    fallbacks: list[str] = field(default_factory=list)
    batch_symbolic: bool = False
    detail: str = ""


def fallback_reason(message: str) -> str:
    """A TcompWarning's message reduced to its reason, with the numbers taken out (a histogram key)."""
    m = re.search(r"cannot compile \S+ \((.*)\); running it eagerly", message, re.S) \
        or re.search(r"raised (.*); running eagerly", message, re.S)
    reason = m.group(1) if m else message
    return re.sub(r"\d+", "N", reason.splitlines()[0])[:160]


def _floating(tree) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _cotangents(leaves: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in leaves]


def _forward_backward(module, params: list, inputs: tuple, seed: int):
    """The outputs, and the gradients of <outputs, random cotangents> with respect to params and inputs."""
    inputs = tuple(x.detach().clone().requires_grad_() for x in inputs)
    out = module(*inputs)
    leaves = _floating(out)
    pairs = [(t, c) for t, c in zip(leaves, _cotangents(leaves, seed)) if t.requires_grad]
    wrt = params + list(inputs)
    grads = torch.autograd.grad([t for t, _ in pairs], wrt, [c for _, c in pairs], allow_unused=True) if pairs \
        else [None] * len(wrt)
    grads = [torch.zeros_like(w) if d is None else d for w, d in zip(wrt, grads)]
    return pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, out), grads


def _directional_derivative(model, params: list, inputs: tuple, seed: int, directions: list) -> float:
    """d/dt <model(inputs + t u) with params + t u, cotangents> at t = 0: a central difference of eager's forward
    (the parameters are moved in place and restored)."""
    saved = [p.detach().clone() for p in params]

    def f(t: float) -> float:
        with torch.no_grad():
            for p, p0, u in zip(params, saved, directions):
                p.copy_(p0 + t * u)
            out = _floating(model(*[x + t * u for x, u in zip(inputs, directions[len(params):])]))
        return sum((o * c).sum() for o, c in zip(out, _cotangents(out, seed))).item()

    try:
        return (f(EPS) - f(-EPS)) / (2 * EPS)
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, saved):
                p.copy_(p0)


def eager_gradients_wrong(model, params: list, inputs: tuple, seed: int, ref_grads: list, out_grads: list) -> bool:
    """Whether eager's forward, differentiated numerically along a random direction, sides with the compiled
    gradients against eager's own: then the bug is in an eager backward kernel, not in tcomp."""
    g = torch.Generator().manual_seed(seed + 1)
    directions = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in ref_grads]
    numeric = _directional_derivative(model, params, inputs, seed, directions)
    ref, out = (sum((d * u).sum().item() for d, u in zip(grads, directions)) for grads in (ref_grads, out_grads))
    tol = 1e-6 * max(sum((d * u).abs().sum().item() for d, u in zip(ref_grads, directions)), 1e-12)
    return abs(out - numeric) <= tol < abs(ref - numeric)


def _scale(t: torch.Tensor) -> float:
    finite = t[t.isfinite()]
    return finite.abs().max().item() if finite.numel() else 0.0


def _difference(ref, out, what: str) -> str:
    """Empty when ``out`` matches ``ref`` (structure, shapes, dtypes and values), else what differs.

    Values are compared by :func:`tcomp.numerics.compare` at float64's tolerance relative to each tensor's scale,
    floored at ``FLOOR`` times the largest scale in ``ref`` and at ``UNIT_FLOOR`` (the cases' data are of unit
    scale): a gradient that is zero up to rounding (a bias before a softmax, a softmax over one element) has no
    scale of its own, and its rounding noise differs between two correct programs."""
    pairs = list(zip(_floating(ref), _floating(out)))
    dtypes = [(r.dtype, o.dtype) for r, o in pairs if r.dtype != o.dtype]
    if dtypes:
        return f"{what}: dtype {dtypes[0][1]} where eager gives {dtypes[0][0]}"
    whole = compare(ref, out)
    if whole.ok:
        return ""
    if whole.max_abs == float("inf"):  # structure or shapes differ
        return f"{what}: {whole.detail}"
    top = max((_scale(r) for r, _ in pairs), default=0.0)
    for k, (r, o) in enumerate(pairs):
        floor = max(FLOOR * top, UNIT_FLOOR)
        c = compare(r, o, rtol=RTOL[torch.float64] * max(1.0, floor / max(_scale(r), 1e-300)))
        if not c.ok:
            return f"{what}: tensor {k}: {c.detail} (max rel {c.max_rel:.3g})"
    return ""


def check(model: torch.nn.Module, example: tuple, fresh: tuple, seed: int) -> Outcome:
    """Compile ``model`` on ``example`` and compare it with eager on ``example`` and on ``fresh``."""
    params = list(model.parameters())
    try:
        refs = [_forward_backward(model, params, x, seed) for x in (example, fresh)]
    except Exception:  # noqa: BLE001 - the generator made a model eager rejects
        return Outcome("invalid", detail=traceback.format_exc(limit=-3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = _compiled_outcome(model, params, example, fresh, refs, seed)
    outcome.fallbacks = [fallback_reason(str(w.message)) for w in caught if issubclass(w.category,
                                                                                        tcomp.TcompWarning)]
    return outcome


def _compiled_outcome(model, params, example, fresh, refs, seed: int) -> Outcome:
    """The compiled model's results on ``example`` and ``fresh`` against eager's, then eager's own again (compiling
    must leave the user's module as it was)."""
    try:
        compiled = tcomp.compile(model, example, backend="eager")
        symbolic = compiled.report.batch_symbolic
        results = [_forward_backward(compiled, params, x, seed) for x in (example, fresh)]
    except Exception:  # noqa: BLE001 - an exception eager did not raise
        return Outcome("crash", detail=traceback.format_exc(limit=-4))
    try:
        results.append(_forward_backward(model, params, example, seed))
    except Exception:  # noqa: BLE001 - compiling broke the eager model
        return Outcome("crash", detail="the eager model after compiling: " + traceback.format_exc(limit=-4))
    labels = ("example", "fresh batch", "eager model after compiling")
    for label, inputs, (ref_out, ref_grads), (out, grads) in zip(labels, (example, fresh, example), [*refs, refs[0]],
                                                                 results):
        detail = _difference(ref_out, out, f"{label} forward")
        if detail:
            return Outcome("mismatch", batch_symbolic=symbolic, detail=detail)
        detail = _difference(ref_grads, grads, f"{label} gradients")
        if detail:
            eager_wrong = label != labels[-1] and eager_gradients_wrong(model, params, inputs, seed, ref_grads, grads)
            return Outcome("eager_wrong" if eager_wrong else "mismatch", batch_symbolic=symbolic, detail=detail)
    return Outcome("ok", batch_symbolic=symbolic)


def run_trial(trial, seed: int) -> tuple[str, Outcome]:
    """Draw case ``seed`` with ``trial`` (``network_trial`` or ``model_trial``) and check it."""
    description, model, example, fresh = trial(seed)
    return description, check(model, example, fresh, seed)


@dataclass
class Tally:
    """Counts over many cases: statuses, cases with a fallback, fallback reasons (with the first case of each),
    batch-symbolic compilations, and the first ``keep`` failures (description and detail)."""

    keep: int = 5
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    fell_back: int = 0
    reasons: Counter = field(default_factory=Counter)
    reason_examples: dict = field(default_factory=dict)
    symbolic: int = 0
    failures: list[dict] = field(default_factory=list)

    def add(self, description: str, outcome: Outcome) -> None:
        self.cases += 1
        self.statuses[outcome.status] += 1
        self.fell_back += bool(outcome.fallbacks)
        for reason in set(outcome.fallbacks):
            self.reasons[reason] += 1
            self.reason_examples.setdefault(reason, description)
        self.symbolic += outcome.batch_symbolic
        if outcome.status != "ok" and len(self.failures) < self.keep:
            self.failures.append({"case": description, "status": outcome.status, "detail": outcome.detail})

    @property
    def failed(self) -> int:
        return sum(self.statuses[s] for s in FAILURES)

    def summary(self) -> str:
        counts = " ".join(f"{self.statuses[s]} {s}" for s in STATUSES)
        return f"{self.cases} ({counts}, {self.fell_back} fell back, {self.symbolic} batch-symbolic)"

    def to_dict(self) -> dict:
        return {"cases": self.cases, **{s: self.statuses[s] for s in STATUSES}, "fell_back": self.fell_back,
                "fallback_reasons": dict(self.reasons.most_common()), "fallback_examples": self.reason_examples,
                "batch_symbolic": self.symbolic, "failures": self.failures}
