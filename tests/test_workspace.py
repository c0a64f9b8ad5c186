"""Session workspaces: shared by the kernel and the shell tool, and removed when no session can use them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ui.workspace import STALE_WORKSPACE_S, remove_stale


def test_stale_workspaces_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old", tmp_path / "fresh"
    for workspace in (old, fresh):
        (workspace / "sub").mkdir(parents=True)
        (workspace / "sub" / "data.csv").write_text("1")
    an_hour_ago = time.time() - 2 * STALE_WORKSPACE_S
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert remove_stale(tmp_path, STALE_WORKSPACE_S) == [old]
    assert not old.exists() and (fresh / "sub" / "data.csv").exists()


def test_a_missing_root_is_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_stale(tmp_path / "never-made", STALE_WORKSPACE_S) == []
