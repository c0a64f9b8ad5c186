"""Opening a mode page in AppTest, as a browser would, with query parameters."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parent.parent / "modes"


def open_page(name: str = "chat.py", **query: str) -> AppTest:
    app = AppTest.from_file(str(PAGES / name), default_timeout=60)
    for key, value in query.items():
        app.query_params[key] = value
    return app.run()
