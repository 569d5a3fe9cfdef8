"""One display convention for klviz's result types: ``Type(name=value, ...)`` as text, a small table as HTML.

A result type lists what it shows in ``_display_fields()`` (name, value) pairs of already-computed
values; the repr and the HTML table are built from that list and nothing else, so displaying a result
never computes anything.
"""

from __future__ import annotations

import html
import math
import numbers


class Shown(str):
    """A string displayed as it is (no quotes): a pre-formatted value such as ``0.4998 ± 0.0003``."""


def format_value(value) -> str:
    """Floats to 6 significant digits (``inf`` / ``nan`` as such), strings quoted unless :class:`Shown`."""
    if isinstance(value, Shown):
        return str(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}" if abs(int(value)) >= 1000 else str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value + 0.0:.6g}"  # + 0.0: no "-0"
    if isinstance(value, str):
        return repr(value)
    return str(value)


class Result:
    """Mixin: ``__repr__`` and ``_repr_html_`` from ``_display_fields()``."""

    def _display_fields(self) -> list[tuple[str, object]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={format_value(value)}" for name, value in self._display_fields())
        return f"{type(self).__name__}({inner})"

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
                        f"<td style='text-align:right'>{html.escape(format_value(value))}</td></tr>"
                        for name, value in self._display_fields())
        return f"<table><caption>{type(self).__name__}</caption>{cells}</table>"
