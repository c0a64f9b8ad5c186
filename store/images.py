"""Images as content-addressed PNG files beside the database.

A file is named by the SHA-256 of its bytes, so the same plot saved twice is one
file, and a message refers to its images by hash. The store removes a file once
no message refers to it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class ImageFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.png"

    def save(self, data: bytes) -> str:
        """Write the image once (atomically: a reader never sees half a file); returns its hash."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.root, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return digest

    def load(self, digest: str) -> bytes | None:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            # Keep the conversation readable even if someone cleaned the folder by hand.
            log.warning("Image file %s is missing; showing the message without it.", self.path(digest))
            return None

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
