"""Files in a session's working directory: uploads in, results out."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from kernel.limits import MAX_LISTED_FILES, MAX_SCANNED_ENTRIES, MAX_UPLOAD_BYTES

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


def check_upload_size(name: str, data: bytes, max_bytes: int) -> None:
    """ValueError, in words, if an upload is larger than `max_bytes`."""
    if len(data) > max_bytes:
        raise ValueError(
            f"File {name!r} is {len(data):,} bytes; uploads are limited to {max_bytes:,} bytes "
            f"({max_bytes / 1e6:.0f} MB)."
        )


def save_upload(directory: Path, name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Write `data` as a sanitised `name` directly inside `directory`, replacing any same-named file.

    Code in the kernel may have planted a symlink or a hard link under that name, pointing at a
    file outside: the data goes to a fresh file that is then renamed over the name, which
    replaces the link itself and never writes through it, with no gap between check and write.
    """
    check_upload_size(name, data, max_bytes)
    filename = safe_filename(name)
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    partial = f".upload-{secrets.token_hex(8)}.part"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=directory_fd)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.rename(partial, filename, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(partial, dir_fd=directory_fd)
            if isinstance(error, IsADirectoryError):
                raise ValueError(f"A folder named {filename!r} is in the working directory; rename the file.") from None
            raise
    finally:
        os.close(directory_fd)
    return directory / filename


def list_files(directory: Path, limit: int = MAX_LISTED_FILES) -> list[Path]:
    """Regular files under `directory` (top level first), skipping hidden and cache entries and links.

    Bounded twice: at most `limit` files, after looking at most MAX_SCANNED_ENTRIES entries,
    so a cell that writes a million files cannot stall every redraw.
    """
    found: list[Path] = []
    scanned = 0
    for root, dirs, files in os.walk(directory):
        scanned += len(dirs) + len(files)
        if scanned > MAX_SCANNED_ENTRIES:
            return found
        dirs[:] = sorted(name for name in dirs if not _is_hidden(name))  # prune, don't descend
        for name in sorted(files):
            path = Path(root, name)
            if _is_hidden(name) or path.is_symlink() or not path.is_file():
                continue
            found.append(path)
            if len(found) >= limit:
                return found
    return found


def read_file(directory: Path, path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, a file under `directory`, opened without following any link on the way.

    Between listing and reading, code in the kernel may swap a file or a folder for a link to a
    file of the host; every component is opened with O_NOFOLLOW, so that fails instead.
    """
    parts = path.relative_to(directory).parts
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for folder in parts[:-1]:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            raise ValueError(f"{path.name} is not a regular file.")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path.name} is larger than {max_bytes:,} bytes.")
    return data


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
