"""Conversation workspaces: a folder per conversation, and leftovers of no conversation removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ui.workspace import STALE_WORKSPACE_S, remove_orphans


def test_old_workspaces_of_no_conversation_are_removed_and_the_others_kept(tmp_path: Path) -> None:
    kept, orphan, fresh = tmp_path / ("a" * 32), tmp_path / ("b" * 32), tmp_path / ("c" * 32)
    for workspace in (kept, orphan, fresh):
        (workspace / "sub").mkdir(parents=True)
        (workspace / "sub" / "data.csv").write_text("1")
    long_ago = time.time() - 2 * STALE_WORKSPACE_S
    for workspace in (kept, orphan):
        os.utime(workspace, (long_ago, long_ago))
    assert remove_orphans(tmp_path, {"a" * 32}, STALE_WORKSPACE_S) == [orphan]
    assert (kept / "sub" / "data.csv").exists() and (fresh / "sub" / "data.csv").exists() and not orphan.exists()


def test_a_missing_root_is_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_orphans(tmp_path / "never-made", set(), STALE_WORKSPACE_S) == []


def test_a_workdir_is_named_only_by_a_conversation_id(isolated_data_dir: Path) -> None:
    from ui.workspace import conversation_workdir

    assert conversation_workdir("d" * 32) == isolated_data_dir / "workspaces" / ("d" * 32)
    with pytest.raises(ValueError, match="Not a conversation id"):
        conversation_workdir("../../etc")
