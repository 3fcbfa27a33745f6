"""The loop that applies one ``elementwise.py`` formula to every element of the flat buffers,
written out per formula (each takes its own state buffers and scalars) for ``cpu.py``'s njit
(prange) and ``cuda.py``'s cuda.jit (grid-stride) kernels.

The source is compiled under this file's name, so Numba's on-disk cache finds it like a
function written here: only the first process pays the compile time.
"""

from __future__ import annotations

import inspect

_TEMPLATE = """
def {name}({params}):
    for i in {indices}:
        {outs} = formula({args})
"""


def loop_function(name: str, formula, compiled, state: tuple[str, ...], indices: str, namespace: dict):
    """A Python function ``name(p, g, *state, *scalars, gscale, tiny)`` (``formula``'s own
    parameters) whose loop over ``indices`` calls ``compiled`` (``formula`` compiled for the
    target) on each element, for the caller to compile. ``namespace`` supplies what ``indices``
    names (``prange``, ``cuda``)."""
    params = list(inspect.signature(formula).parameters)
    if params[:2] != ["p", "g"] or tuple(params[2 : 2 + len(state)]) != state or params[-2:] != ["gscale", "tiny"]:
        raise TypeError(f"{formula.__name__}{tuple(params)} must take (p, g, {', '.join(state)}, <scalars>, "
                        f"gscale, tiny)")
    per_element = {"p", "g", *state}
    src = _TEMPLATE.format(name=name, params=", ".join(params), indices=indices,
                           outs=", ".join(f"{a}[i]" for a in ("p", *state)) + ",",
                           args=", ".join(f"{a}[i]" if a in per_element else a for a in params))
    scope = {**namespace, "formula": compiled, "__name__": __name__}
    exec(compile(src, __file__, "exec"), scope)
    return scope[name]
