"""Turn one cell's IOPub messages into `Output`s, within a size budget."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from kernel.limits import MAX_RESULT_BINARY_BYTES, MAX_RESULT_TEXT_CHARS
from kernel.result import Output, OutputKind
from kernel.text import strip_ansi

# "raw_input was called, but this frontend does not support input requests" leaves a model
# guessing; say what happened and what to do instead.
_CLEARER_ERRORS = {
    "StdinNotImplementedError": "input() is not available: the code runs unattended, nobody can type an answer. "
    "Put the values in the code instead.",
}
# The text/plain of objects without a repr of their own says nothing ("<IPython.core.display.HTML object>").
_DEFAULT_REPR = re.compile(r"^<[\w.]+ object( at 0x[0-9a-f]+)?>$")


class OutputCollector:
    """Accumulates the outputs of one execution in order.

    Text beyond `max_text_chars` and binary data beyond `max_binary_bytes` are dropped
    (and counted), so a cell printing gigabytes cannot exhaust the app's memory.
    """

    def __init__(
        self, max_text_chars: int = MAX_RESULT_TEXT_CHARS, max_binary_bytes: int = MAX_RESULT_BINARY_BYTES
    ) -> None:
        self.outputs: list[Output] = []
        self.execution_count: int | None = None
        self._text_left = max_text_chars
        self._binary_left = max_binary_bytes
        self._dropped_chars = 0
        self._clear_on_next_output = False
        self._display_ids: dict[str, int] = {}  # display_id -> index in outputs

    def add(self, msg: dict[str, Any]) -> None:
        """Take one IOPub message belonging to this execution; ignore kinds that show nothing."""
        msg_type, content = msg["msg_type"], msg["content"]
        if msg_type == "stream":
            self._add_stream(content["name"], content["text"])
        elif msg_type == "execute_input":  # carries the count even when the cell fails
            self.execution_count = content.get("execution_count")
        elif msg_type == "execute_result":
            self._append(self._rich_output("result", content["data"]))
        elif msg_type == "display_data":
            self._append(self._rich_output("display", content["data"]), content.get("transient", {}))
        elif msg_type == "update_display_data":
            self._update_display(content)
        elif msg_type == "error":
            self._append(self._error_output(content))
        elif msg_type == "clear_output":
            if content.get("wait"):
                self._clear_on_next_output = True
            else:
                self._clear()

    def add_note(self, output: Output) -> None:
        """Append an output the session itself reports (a timeout, a kernel death)."""
        self._note_truncation()
        self._append(output)

    def finish(self) -> list[Output]:
        """The outputs, with a note where text was dropped for size."""
        self._note_truncation()
        return self.outputs

    def _note_truncation(self) -> None:
        if self._dropped_chars:
            note = f"\n[Output truncated: {self._dropped_chars} more characters were not kept]\n"
            self.outputs.append(Output(kind="stream", name="stderr", text=note))
            self._dropped_chars = 0

    def _add_stream(self, name: str, text: str) -> None:
        text = strip_ansi(self._take_text(text))  # cut first: stripping 10 MB would cost more than it saves
        last = self.outputs[-1] if self.outputs else None
        if last and last.kind == "stream" and last.name == name and not self._clear_on_next_output:
            last.text += text  # one output per run of the same stream, as notebooks show it
        elif text:
            self._append(Output(kind="stream", name=name, text=text))

    def _append(self, output: Output, transient: dict[str, Any] | None = None) -> None:
        if self._clear_on_next_output:
            self._clear()
        display_id = (transient or {}).get("display_id")
        if display_id:
            self._display_ids[display_id] = len(self.outputs)
        self.outputs.append(output)

    def _clear(self) -> None:
        self.outputs.clear()
        self._display_ids.clear()
        self._clear_on_next_output = False

    def _update_display(self, content: dict[str, Any]) -> None:
        index = self._display_ids.get(content.get("transient", {}).get("display_id"))
        if index is not None:
            self.outputs[index] = self._rich_output("display", content["data"])

    def _rich_output(self, kind: OutputKind, data: dict[str, Any]) -> Output:
        """A MIME bundle: PNG decoded, text kept, other binary formats only summarised."""
        mime: dict[str, str] = {}
        png: bytes | None = None
        summaries: list[str] = []
        for mimetype, value in data.items():
            if mimetype == "image/png":
                png = self._take_binary(base64.b64decode(value))
                if png is None:
                    summaries.append(f"[image/png output, {_base64_size(value)} bytes, not kept: result too large]")
            elif not isinstance(value, str):  # JSON-valued MIME types such as application/json
                mime[mimetype] = self._take_text(json.dumps(value))
            elif _is_textual(mimetype):
                mime[mimetype] = self._take_text(value)
            else:
                summaries.append(f"[{mimetype} output, {_base64_size(value)} bytes]")
        # For binary bundles text/plain is just a repr like "<IPython.core.display.Image object>".
        text = "\n".join(summaries) or _preferred_text(mime)
        return Output(kind=kind, text=text, mime=mime, png=png)

    def _error_output(self, content: dict[str, Any]) -> Output:
        ename = content.get("ename", "Error")
        evalue = _CLEARER_ERRORS.get(ename, content.get("evalue", ""))
        traceback = [strip_ansi(self._take_text(line)) for line in content.get("traceback", [])]
        return error_output(ename, evalue, traceback)

    def _take_text(self, text: str) -> str:
        kept = text[: self._text_left]
        self._text_left -= len(kept)
        self._dropped_chars += len(text) - len(kept)
        return kept

    def _take_binary(self, data: bytes) -> bytes | None:
        if len(data) > self._binary_left:
            return None
        self._binary_left -= len(data)
        return data


def _is_textual(mimetype: str) -> bool:
    return mimetype.startswith("text/") or mimetype.endswith(("+xml", "+json")) or mimetype == "application/javascript"


def error_output(ename: str, evalue: str, traceback: list[str] | None = None) -> Output:
    text = f"{ename}: {evalue}" if evalue else ename
    return Output(kind="error", text=text, ename=ename, evalue=evalue, traceback=traceback or [])


def _preferred_text(mime: dict[str, str]) -> str:
    plain = mime.get("text/plain", "")
    if plain and not _DEFAULT_REPR.match(plain):
        return plain
    for mimetype in ("text/markdown", "text/html", "text/latex", "image/svg+xml"):
        if mimetype in mime:
            return mime[mimetype]
    return plain or next(iter(mime.values()), "")


def _base64_size(encoded: str) -> int:
    """Decoded size of base64 text, without decoding it."""
    return len(encoded.replace("\n", "")) * 3 // 4
