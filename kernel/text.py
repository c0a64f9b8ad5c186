"""Plain-text helpers: what a terminal colours, what a model reads."""

from __future__ import annotations

import re

# CSI sequences (colours, cursor moves) and OSC sequences (titles, hyperlinks).
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# IPython marks the failing line of each frame with an arrow: "----> 5 f()" or "--> 12 g()".
_ARROW_LINE = re.compile(r"^-*> +\d+")
# Where an installed module's frame lives: ".../lib/python3.11/site-packages/" (or the standard
# library's ".../lib/python3.11/"). The module's own path says what failed; the prefix is this
# server's layout, 10-20 tokens a frame.
_LIBRARY_PREFIX = re.compile(r"^File \S*?/lib/python3[.\d]*/(?:(?:site|dist)-packages/)?")
# A line written this many times in a row or more is read once, with a count (a warning or a
# log line in a loop: matplotlib's "findfont: Font family ... not found." a dozen times).
MIN_REPEATS_TO_COUNT = 3


def strip_ansi(text: str) -> str:
    """Remove terminal escape codes, which are noise to a model and to a web page."""
    return _ANSI_ESCAPE.sub("", text)


def count_repeated_lines(text: str) -> str:
    """Write a line repeated MIN_REPEATS_TO_COUNT times in a row or more once, and say how many more times it came."""
    lines = text.split("\n")
    kept: list[str] = []
    index = 0
    while index < len(lines):
        end = index + 1
        while end < len(lines) and lines[end] == lines[index]:
            end += 1
        repeats = end - index
        if repeats >= MIN_REPEATS_TO_COUNT and lines[index]:
            kept += [lines[index], f"... [the line above {repeats - 1} more times] ..."]
        else:
            kept += lines[index:end]
        index = end
    return "\n".join(kept)


def short_traceback(traceback: list[str], max_frames: int, ename: str = "") -> str:
    """Condense an IPython traceback to each frame's location and failing line.

    `traceback` is the ANSI-free list from an error message; an installed module's frame is
    named by its path from the package ("matplotlib/axes/_axes.py"). The banner and the
    "ename: ..." lines are dropped (the caller states the error itself); the innermost
    `max_frames` frames are kept because that is where the error happened.
    """
    frames = [entry for entry in traceback if not _is_banner(entry)]
    condensed = [_condense_frame(frame, ename) for frame in frames]
    condensed = [frame for frame in condensed if frame.strip()]
    omitted = len(condensed) - max_frames
    if omitted > 0:
        condensed = [f"... [{omitted} earlier frames omitted] ...", *condensed[-max_frames:]]
    return "\n".join(condensed)


def _is_banner(entry: str) -> bool:
    stripped = entry.strip()
    return set(stripped) == {"-"} or stripped.endswith("Traceback (most recent call last)")


def _condense_frame(frame: str, ename: str) -> str:
    lines = [line for line in frame.rstrip("\n").split("\n") if not (ename and line.startswith(f"{ename}:"))]
    if not lines:
        return ""
    arrows = [line for line in lines[1:] if _ARROW_LINE.match(line)]
    location = _LIBRARY_PREFIX.sub("File ", lines[0])
    # A frame without an arrow (a SyntaxError's caret display) is short and all of it matters.
    return "\n".join([location, *arrows]) if arrows else "\n".join([location, *lines[1:]])
