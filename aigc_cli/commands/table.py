"""The tables `aigc logs` and `aigc models list` print: fitted to a terminal, whole in a pipe.

On a terminal a table fits its width: the columns that may give way (a prompt, an output, a repo id) are
cut with an ellipsis, the others (ids, times, sizes) stay whole, and no line is wider than the terminal.
Anywhere else (a pipe, a file) every value is whole and the layout depends on the rows alone, so a script
sees the same table whatever terminal it runs from (`--json` is the form meant for programs).
Widths are counted in terminal cells (a CJK character or an emoji takes two).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size

ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    """One column of a table."""

    header: str
    right: bool = False
    """Aligned right (numbers, sizes)."""
    give: int = 0
    """0: always whole; above 0: may be cut on a narrow terminal, taking room in proportion to this."""
    least: int = 8
    """The narrowest a column that gives way is cut to while the terminal leaves room for it; on a
    narrower one, the columns that give most go below theirs first."""
    tail: bool = False
    """Cut at the start, keeping the end (a repo id's model name rather than its owner)."""


def cell(value: object) -> str:
    """A value as one line of printable text: runs of whitespace (newlines too) become one space, and
    control characters (a model's output may hold escape sequences) the replacement character."""
    flat = " ".join(str("" if value is None else value).split())
    return "".join(c if c.isprintable() else "\ufffd" for c in flat)


def cut(text: str, width: int, tail: bool = False) -> str:
    """`text` within `width` cells, its end (with `tail`, its start) replaced by an ellipsis when it was
    longer."""
    if cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    if tail:
        return ELLIPSIS + set_cell_size(text[::-1], width - 1)[::-1].lstrip()
    return set_cell_size(text, width - 1).rstrip() + ELLIPSIS


def _share(natural: list[int], weights: list[int], least: list[int], room: int) -> list[int]:
    """Widths for the columns that give way, together within `room` where their leasts allow: each gets its
    share of the room by weight; one that needs less than its share keeps its natural width, and one whose
    share is below its least gets its least, the others sharing what is left."""
    widths = list(natural)
    open_ = list(range(len(natural)))
    while open_:
        total = sum(weights[i] for i in open_)
        shares = {i: room * weights[i] / total for i in open_}
        settled = {i: natural[i] for i in open_ if natural[i] <= shares[i]}
        settled = settled or {i: least[i] for i in open_ if shares[i] < least[i]}
        if not settled:
            for i in open_:
                widths[i] = int(shares[i])
            spare = room - sum(widths[i] for i in open_)
            for i in sorted(open_, key=lambda i: shares[i] - widths[i], reverse=True)[:spare]:
                widths[i] += 1  # a cell left over by rounding down
            break
        for i, width in settled.items():
            widths[i] = width
            room -= width
            open_.remove(i)
    return widths


def render(columns: Sequence[Column], rows: Sequence[Sequence[object]], width: int | None) -> list[str]:
    """The header and the rows as lines (without newlines): within `width` cells when it is given (a
    terminal), every value whole when it is None (a pipe). Columns are two spaces apart, one when the
    table does not fit whole."""
    table = [[c.header for c in columns], *([cell(v) for v in row] for row in rows)]
    natural = [max(cell_len(line[i]) for line in table) for i in range(len(columns))]
    widths, gap = list(natural), 2
    if width is not None and sum(natural) + gap * (len(columns) - 1) > width:
        gap = 1
        giving = [i for i, c in enumerate(columns) if c.give]
        fixed = sum(natural[i] for i in range(len(columns)) if i not in giving)
        room = width - fixed - gap * (len(columns) - 1)
        least = [min(natural[i], columns[i].least) for i in giving]
        # A narrow terminal: below their leasts, the column that gives most goes first.
        for k in sorted(range(len(giving)), key=lambda k: columns[giving[k]].give, reverse=True):
            least[k] = max(1, least[k] - max(0, sum(least) - room))
        shared = _share([natural[i] for i in giving], [columns[i].give for i in giving], least, room)
        for i, each in zip(giving, shared, strict=True):
            widths[i] = each
    lines = []
    for line in table:
        parts = []
        for value, column, size in zip(line, columns, widths, strict=True):
            value = cut(value, size, column.tail)
            pad = " " * (size - cell_len(value))
            parts.append(pad + value if column.right else value + pad)
        text = (" " * gap).join(parts).rstrip()
        if width is not None and cell_len(text) > width:  # narrower than the columns kept whole
            text = cut(text, width)
        lines.append(text)
    return lines
