"""What one execution produced: the cell's outputs in order, and the text a model reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from glm_client.observations import cap_middle
from kernel.limits import MAX_OBSERVATION_CHARS, MAX_TRACEBACK_FRAMES
from kernel.text import count_repeated_lines, short_traceback

OutputKind = Literal["stream", "result", "display", "error"]
Status = Literal["ok", "error", "timeout", "died", "interrupted"]

IMAGE_PLACEHOLDER = "[Image]"
NO_OUTPUT_OBSERVATION = "[The code ran without output]"


@dataclass
class Output:
    """One output of a cell, as the UI shows it.

    `text` is the plain-text rendering: stream text, `text/plain` of a result or display,
    a summary of a binary MIME bundle, or "Name: value" of an error. `mime` keeps the
    textual representations (text/html, text/markdown, image/svg+xml, ...) for rich display.
    """

    kind: OutputKind
    text: str = ""
    name: str | None = None  # stream name: "stdout" or "stderr"
    mime: dict[str, str] = field(default_factory=dict)
    png: bytes | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)  # ANSI codes stripped

    def observation(self) -> str:
        """This output as the model reads it."""
        if self.kind == "error":
            trace = short_traceback(self.traceback, MAX_TRACEBACK_FRAMES, ename=self.ename or "")
            return f"{trace}\n{self.text}" if trace else self.text
        if self.png is not None:
            return IMAGE_PLACEHOLDER
        return self.text


@dataclass
class ExecutionResult:
    """Everything one `KernelSession.execute` call produced.

    `status` is "ok", "error" (the code raised), "timeout" (interrupted or restarted at the
    time limit), "died" (the kernel process exited; it has been restarted) or "interrupted"
    (by `KernelSession.interrupt`).
    """

    outputs: list[Output] = field(default_factory=list)
    status: Status = "ok"
    duration_s: float = 0.0
    execution_count: int | None = None

    @property
    def text(self) -> str:
        """All text outputs in order (streams, results, displays, errors); images are left out."""
        parts = [output.text for output in self.outputs if output.png is None and output.text]
        return _join_lines(parts)

    @property
    def images(self) -> list[bytes]:
        """PNG bytes of every image output, in order."""
        return [output.png for output in self.outputs if output.png is not None]

    @property
    def error(self) -> Output | None:
        """The last error output (a timeout or kernel death comes after the kernel's own error)."""
        return next((output for output in reversed(self.outputs) if output.kind == "error"), None)

    def to_observation(self, max_chars: int = MAX_OBSERVATION_CHARS) -> str:
        """What the model reads: text in order, images as "[Image]", errors condensed, a line
        repeated many times in a row once with its count, capped."""
        parts = [output.observation() for output in self.outputs]
        text = count_repeated_lines(_join_lines([part for part in parts if part])) or NO_OUTPUT_OBSERVATION
        return cap_middle(text, max_chars)


def _join_lines(parts: list[str]) -> str:
    """Concatenate outputs so each starts on its own line, without doubling newlines."""
    pieces: list[str] = []
    for part in parts:
        if pieces and not pieces[-1].endswith("\n"):
            pieces.append("\n")
        pieces.append(part)
    return "".join(pieces)
