"""The console's list tables: vi keys, and a selection that follows its item, not its row number.

Every list in the console is a :class:`LiveTable`: refilled each second from
the database, it keeps the highlighted row on the same item (by key: a request
id, a session id, an event's sequence number), so a row arriving above it
never moves the highlight onto something else, and the action a key starts
acts on the item the operator was looking at.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType
from textual.binding import Binding
from textual.widgets import DataTable

#: One table row: its key and its cells.
Row = tuple[str, Sequence[RenderableType]]
#: A column: its label, or its label and a fixed width.
Column = str | tuple[str, int]


class ListTable(DataTable[RenderableType]):
    """A row-cursor table with vi keys (``j``/``k``) as well as the arrows, as in k9s and htop."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, *columns: Column, id: str, zebra: bool = True) -> None:  # noqa: A002
        super().__init__(id=id, cursor_type="row", zebra_stripes=zebra)
        self.set_columns(columns)

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Replace every column (and row). Fixed widths are kept: DataTable sizes automatic
        columns only when idle, so a table filled on first display could be drawn at
        header width."""
        self.clear(columns=True)
        for column in columns:
            if isinstance(column, str):
                self.add_column(column)
            else:
                label, width = column
                self.add_column(label, width=width)


class LiveTable(ListTable):
    """A list refilled every second without losing the reader's place.

    :meth:`refill` does nothing when the rows are unchanged; otherwise it keeps
    the selected row (by key, so it follows its item when rows are added or
    removed above it) and the scroll position.
    """

    def __init__(self, *columns: Column, id: str, zebra: bool = True) -> None:  # noqa: A002
        super().__init__(*columns, id=id, zebra=zebra)
        self._shown: list[tuple[str, tuple[str, ...]]] = []
        #: Every row of the last refill, before the filter.
        self._all: list[Row] = []
        #: Rows are shown only if their text contains this (case-insensitive); "" shows all.
        self.filter_text = ""

    def set_filter(self, text: str) -> None:
        """Show only the rows whose cells contain ``text`` (``""``: every row)."""
        self.filter_text = text.strip()
        self._show(self._all)

    @property
    def total(self) -> int:
        """Rows before the filter."""
        return len(self._all)

    def set_columns(self, columns: Sequence[Column]) -> None:
        super().set_columns(columns)
        self._shown = []

    @property
    def selected_key(self) -> str | None:
        """The key of the selected row, or None if the table is empty."""
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def refill(self, rows: Sequence[Row]) -> None:
        """Show ``rows`` (key, cells) in order, those that pass the filter."""
        self._all = list(rows)
        self._show(self._all)

    def _show(self, every: Sequence[Row]) -> None:
        wanted = self.filter_text.casefold()
        rows = [
            (key, cells) for key, cells in every
            if not wanted or wanted in " ".join(str(value) for value in cells).casefold()
        ]  # fmt: skip
        shown = [(key, tuple(str(value) for value in cells)) for key, cells in rows]
        if shown == self._shown:
            return
        self._shown = shown
        selected, index = self.selected_key, self.cursor_row
        scroll_x, scroll_y = self.scroll_x, self.scroll_y
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if not rows:
            return
        if selected is not None and selected in self.rows:
            moved = self.get_row_index(selected) - index
            index += moved
            if scroll_y > 0:
                # Scrolled down: rows added above must not push the ones being read away.
                scroll_y += moved
        self.move_cursor(row=min(max(index, 0), len(rows) - 1), scroll=False)
        # clear() scrolled home; go back once the new size is known.
        self.call_after_refresh(self.scroll_to, scroll_x, scroll_y, animate=False)
