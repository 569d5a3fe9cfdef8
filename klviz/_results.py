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

    def __repr__(self) -> str:
        return str(self)


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


class Table:
    r"""A small table that displays itself: aligned plain text (``print``, GitHub) and an HTML table (JupyterLab,
    the site) — what a notebook shows instead of hand-aligned f-strings.

    Parameters
    ----------
    columns : sequence of str
        Column headings.
    rows : sequence of sequences
        One value per column; floats are shown to ``digits`` significant digits, strings as they are (write a
        bound such as ``"< 1e-15"`` as a string).
    caption : str, optional
    digits : int or mapping of column to int or format spec, default 6
        Significant digits for floats, per column where a mapping is given (a str value is a format spec such as
        ``".4f"`` or ``"+.2f"``).

    Examples
    --------
    >>> print(Table(["gap", "KL"], [(0.1, 0.005), (1.0, 0.5)], caption="unit Gaussians"))
    unit Gaussians
    gap     KL
    0.1  0.005
      1    0.5
    """

    def __init__(self, columns, rows, *, caption: str | None = None, digits=6):
        self.columns = [str(c) for c in columns]
        self.rows = [list(row) for row in rows]
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"every row must have {len(self.columns)} values (the columns), got {len(row)}")
        self.caption = caption
        self.digits = digits

    def _spec(self, column: str):
        if isinstance(self.digits, dict):
            spec = self.digits.get(column, 6)
        else:
            spec = self.digits
        return spec if isinstance(spec, str) else f".{int(spec)}g"

    def _cell(self, value, column: str) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or value is None:
            return str(value)
        if isinstance(value, numbers.Integral):
            return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
        if isinstance(value, numbers.Real):
            value = float(value)
            if math.isnan(value) or math.isinf(value):
                return str(value)
            return format(value + 0.0, self._spec(column))
        return str(value)

    def cells(self) -> list[list[str]]:
        return [[self._cell(v, c) for v, c in zip(row, self.columns)] for row in self.rows]

    def __str__(self) -> str:
        cells = self.cells()
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        lines = [] if self.caption is None else [self.caption]
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(self.columns, widths))).rstrip())
        for row in cells:
            lines.append("  ".join(v.ljust(w) if i == 0 and not _numeric(v) else v.rjust(w)
                                   for i, (v, w) in enumerate(zip(row, widths))).rstrip())
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:right'>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self.cells())
        caption = "" if self.caption is None else f"<caption>{html.escape(self.caption)}</caption>"
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def residue(value, *, floor: float = 1e-15, digits: int = 1) -> Shown:
    """A difference that is zero up to rounding, shown as a bound (``< 1e-15``) when below ``floor`` and as a number
    otherwise: what a notebook prints instead of a raw 1e-17, whose last digits differ from one CPU to another.

    Examples
    --------
    >>> residue(3e-17), residue(-2.5e-9, digits=2)
    (< 1e-15, -2.50e-09)
    """
    value = float(value)
    if math.isnan(value):
        return Shown("nan")
    return Shown(f"< {floor:.0e}" if abs(value) < floor else f"{value:.{digits}e}")
