"""Plain-text helpers: what a terminal colours, what a model reads."""

from __future__ import annotations

import re

# CSI sequences (colours, cursor moves) and OSC sequences (titles, hyperlinks).
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# IPython marks the failing line of each frame with an arrow: "----> 5 f()" or "--> 12 g()".
_ARROW_LINE = re.compile(r"^-*> +\d+")


def strip_ansi(text: str) -> str:
    """Remove terminal escape codes, which are noise to a model and to a web page."""
    return _ANSI_ESCAPE.sub("", text)


def omission_marker(omitted: int) -> str:
    return f"\n... [{omitted} characters omitted] ...\n"


def cap_middle(text: str, max_chars: int) -> str:
    """Keep the head and tail of `text` within `max_chars`, marking what was cut.

    Head and tail both matter: the head says what ran, the tail holds the final error or result.
    """
    if len(text) <= max_chars:
        return text
    # The marker's own length depends on the count it reports; size it for the worst case.
    budget = max(max_chars - len(omission_marker(len(text))), 0)
    head = budget // 2
    tail = budget - head
    omitted = len(text) - head - tail
    return text[:head] + omission_marker(omitted) + (text[-tail:] if tail else "")


def short_traceback(traceback: list[str], max_frames: int, ename: str = "") -> str:
    """Condense an IPython traceback to each frame's location and failing line.

    `traceback` is the ANSI-free list from an error message. The banner and the
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
    # A frame without an arrow (a SyntaxError's caret display) is short and all of it matters.
    return "\n".join([lines[0], *arrows]) if arrows else "\n".join(lines)
