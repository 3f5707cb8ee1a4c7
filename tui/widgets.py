"""Widgets shared by console screens: a terminal screen drawn from emulator cells, and the
title bar.

Recorded and live sessions are hostile input: their output may carry
clipboard writes (OSC 52), title changes, device-status requests, DCS
strings or any other escape sequence aimed at the auditor's terminal. None
of it is ever written out. The output goes through a terminal emulator
(pyte) first; :class:`TerminalView` draws only the emulator's cells (a
character and its colours, see :func:`safe_cell`), so what reaches the
auditor's terminal is plain text in Textual's own styles. The terminal title
and anything else the emulator keeps outside its cells are never shown.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import pyte
from pyte.screens import Char
from rich.color import Color, ColorParseError
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from recordings.terminal import TerminalModel

#: Characters that make a whole cell blank: controls (C0, DEL, C1) and surrogates.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cs"})
#: Characters dropped from a cell: format characters (bidirectional overrides, joiners).
_FORMAT_CATEGORY = "Cf"
#: Marks that combine with the character before them (accents, variation selectors).
_MARK_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
#: pyte's colour names that Rich spells differently.
_COLOUR_NAMES = {"brown": "yellow"}


@lru_cache(maxsize=4096)  # a screen is mostly the same few characters
def safe_cell(data: str) -> str:
    """What a cell may draw: one character and its combining marks, else a space.

    A cell holding any control character is drawn blank; format characters
    (a right-to-left override could disguise a command) are dropped; so is
    anything after the cell's one character and its marks. pyte keeps
    controls out of its cells, but this widget must not depend on that: a
    single ESC reaching the output would be read by the auditor's terminal.
    """
    categories = [unicodedata.category(c) for c in data]
    if not data or any(category in _CONTROL_CATEGORIES for category in categories):
        return " "
    kept = [(c, k) for c, k in zip(data, categories, strict=True) if k != _FORMAT_CATEGORY]
    if not kept or kept[0][1] in _MARK_CATEGORIES:
        return " "  # a lone mark would merge into the cell before it
    marks = []
    for char, category in kept[1:]:
        if category not in _MARK_CATEGORIES:
            break
        marks.append(char)
    return kept[0][0] + "".join(marks)


@lru_cache(maxsize=512)
def _colour(name: str) -> Color | None:
    """A pyte colour (``red``, ``brightred``, ``ff8700``, ``default``) as a Rich colour."""
    if name == "default" or not name:
        return None
    if name.startswith("bright") and len(name) > 6:
        base = name[6:]
        name = "bright_" + _COLOUR_NAMES.get(base, base)
    else:
        name = _COLOUR_NAMES.get(name, name)
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        name = "#" + name
    try:
        return Color.parse(name)
    except ColorParseError:
        return None


@lru_cache(maxsize=1024)
def _style(
    fg: str, bg: str, bold: bool, italic: bool, underline: bool, strike: bool, reverse: bool
) -> Style:
    return Style(
        color=_colour(fg),
        bgcolor=_colour(bg),
        bold=bold,
        italic=italic,
        underline=underline,
        strike=strike,
        reverse=reverse,
    )


def _row_strip(screen: pyte.Screen, y: int, cursor_x: int | None) -> Strip:
    """One screen row as a Strip exactly ``screen.columns`` cells wide."""
    # .get, not [], so drawing never adds entries to pyte's defaultdicts.
    row: Mapping[int, Char] = screen.buffer.get(y, {})
    default = screen.default_char
    segments: list[Segment] = []
    run: list[str] = []
    run_style: Style | None = None
    for x in range(screen.columns):
        char = row.get(x, default)
        if char.data == "":
            continue  # the second half of a wide character
        style = _style(
            char.fg, char.bg, char.bold, char.italics, char.underscore, char.strikethrough,
            char.reverse != (x == cursor_x),
        )  # fmt: skip
        if style is not run_style and run:
            segments.append(Segment("".join(run), run_style))
            run = []
        run_style = style
        run.append(safe_cell(char.data))
    if run:
        segments.append(Segment("".join(run), run_style))
    # pyte and Rich may disagree on a character's width: keep every row aligned.
    return Strip(segments).adjust_cell_length(screen.columns)


@dataclass(frozen=True)
class TerminalImage:
    """A terminal screen drawn once, immutable: safe to build in a thread and show later."""

    lines: tuple[Strip, ...]
    width: int
    height: int
    #: Column and row of the visible cursor, or None if the program hid it.
    cursor: tuple[int, int] | None

    @classmethod
    def of(cls, screen: pyte.Screen | TerminalModel, *, show_cursor: bool = True) -> TerminalImage:
        """Draw ``screen`` (a pyte screen, or the screen a TerminalModel is showing)."""
        if isinstance(screen, TerminalModel):
            screen = screen.screen
        cursor = None
        if show_cursor and not screen.cursor.hidden:
            cursor = (min(screen.cursor.x, screen.columns - 1), screen.cursor.y)
        lines = tuple(
            _row_strip(screen, y, cursor[0] if cursor and cursor[1] == y else None)
            for y in range(screen.lines)
        )
        return cls(lines, screen.columns, screen.lines, cursor)

    @property
    def text(self) -> str:
        """The characters shown, one line per row (for tests and copying)."""
        return "\n".join(line.text for line in self.lines)


class TerminalView(ScrollView):
    """Shows a terminal screen; scrolls when the widget is smaller than the terminal.

    Feed it with :meth:`update_screen` (on the UI thread) or, when the screen
    is owned by a worker thread, build a :class:`TerminalImage` there and
    pass it to :meth:`show_image`.
    """

    DEFAULT_CSS = """
    TerminalView {
        background: $background;
        scrollbar-size: 1 1;
    }
    """

    def __init__(
        self,
        *,
        follow_cursor: bool = True,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's own parameter name
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        #: Scroll so the cursor stays visible whenever a new screen is shown.
        self.follow_cursor = follow_cursor
        self._image = TerminalImage((), 0, 0, None)

    @property
    def image(self) -> TerminalImage:
        """What is shown now."""
        return self._image

    def update_screen(self, screen: pyte.Screen | TerminalModel) -> None:
        """Show ``screen`` as it is now."""
        self.show_image(TerminalImage.of(screen))

    def show_image(self, image: TerminalImage) -> None:
        """Show a screen drawn earlier."""
        self._image = image
        self.virtual_size = Size(image.width, image.height)
        if self.follow_cursor and image.cursor is not None:
            x, y = image.cursor
            self.scroll_to_region(Region(x, y, 1, 1), animate=False, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.visual_style.rich_style
        row = scroll_y + y
        if row >= len(self._image.lines):
            return Strip.blank(width, base)
        line = self._image.lines[row].crop_extend(scroll_x, scroll_x + width, None)
        # The widget's colours apply where the program used its terminal's defaults.
        return line.apply_style(base)


class TitleBar(Widget):
    """The top line: the console's title and who is signed in (``app.title — app.sub_title``).

    Textual's ``Header`` updates a child widget from a watcher, which fails when the
    console closes while a screen is still being built; this draws itself from the app's
    title instead, so there is nothing to look up.
    """

    DEFAULT_CSS = """
    TitleBar {
        height: 1;
        background: $panel;
        color: $foreground;
        content-align: center middle;
    }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "title", self._changed, init=False)
        self.watch(self.app, "sub_title", self._changed, init=False)

    def _changed(self) -> None:
        self.refresh()

    def render(self) -> Text:
        title = Text(self.app.title, style="bold")
        if self.app.sub_title:
            title.append(f" — {self.app.sub_title}")
        return title
