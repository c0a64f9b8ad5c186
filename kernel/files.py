"""Files in a session's working directory: uploads in, results out."""

from __future__ import annotations

import os
import re
from pathlib import Path

from kernel.limits import MAX_LISTED_FILES, MAX_UPLOAD_BYTES

# Anything but letters (any script), digits, dot, dash, underscore and space becomes "_".
_UNSAFE_CHARS = re.compile(r"[^\w.\- ]")
_MAX_NAME_BYTES = 200  # below the usual 255-byte limit, leaving room for the suffix
DEFAULT_UPLOAD_NAME = "upload"

FileSnapshot = dict[Path, tuple[int, int]]  # path -> (mtime_ns, size)


def safe_filename(name: str) -> str:
    """A plain file name from whatever the browser sent: no directories, no hidden files.

    "../x" -> "x", "/etc/passwd" -> "passwd", "" / "." / ".." -> "upload", ".env" -> "env".
    """
    basename = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_CHARS.sub("_", basename).strip(" .")
    if not cleaned:
        return DEFAULT_UPLOAD_NAME
    stem, dot, suffix = cleaned.rpartition(".")
    if len(cleaned.encode()) > _MAX_NAME_BYTES:
        keep = f"{dot}{suffix}" if dot and len(suffix) <= 16 else ""
        head = (stem if keep else cleaned).encode()[: _MAX_NAME_BYTES - len(keep.encode())]
        cleaned = head.decode(errors="ignore") + keep
    return cleaned


def save_upload(directory: Path, name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Write `data` as a sanitised `name` directly inside `directory`, replacing any same-named file."""
    if len(data) > max_bytes:
        raise ValueError(
            f"File {name!r} is {len(data):,} bytes; uploads are limited to {max_bytes:,} bytes "
            f"({max_bytes / 1e6:.0f} MB)."
        )
    path = directory / safe_filename(name)
    if path.is_symlink():  # code in the kernel may have planted a link pointing outside
        path.unlink()
    path.write_bytes(data)
    return path


def list_files(directory: Path, limit: int = MAX_LISTED_FILES) -> list[Path]:
    """Regular files under `directory` (top level first), skipping hidden and cache entries and links."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(name for name in dirs if not _is_hidden(name))  # prune, don't descend
        for name in sorted(files):
            path = Path(root, name)
            if _is_hidden(name) or path.is_symlink() or not path.is_file():
                continue
            found.append(path)
            if len(found) >= limit:
                return found
    return found


def snapshot(directory: Path) -> FileSnapshot:
    """Modification time and size of each listed file, to compare after a cell has run."""
    state: FileSnapshot = {}
    for path in list_files(directory):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while we looked
            continue
        state[path] = (stat.st_mtime_ns, stat.st_size)
    return state


def new_files_since(directory: Path, before: FileSnapshot) -> list[Path]:
    """Files created or changed since `before` was taken."""
    return [path for path, state in snapshot(directory).items() if before.get(path) != state]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"
