"""Fresh names for values and ``tcomp.…`` submodule targets that a pass adds to a Program."""
from __future__ import annotations

import re

from .ops import Call


class Names:
    """Fresh value names and ``tcomp.…`` submodule targets that collide with nothing in the program."""

    def __init__(self, program):
        self.used = {v.name for v in program.values()}
        self.used |= {op.target for op in program.ops if isinstance(op, Call) and op.kind == "module"}

    def fresh(self, base: str, prefix: str = "") -> str:
        base = prefix + re.sub(r"\W", "_", base)
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def target(self, base: str) -> str:
        return self.fresh(base, prefix="tcomp.")
