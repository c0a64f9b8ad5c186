"""Images as content-addressed PNG files beside the database.

A file is named by the SHA-256 of its bytes, so the same plot saved twice is one
file, and a message refers to its images by hash. The store removes a file once
no message refers to it. `image_problem` says, from the header alone, whether an
image is safe to decode and show.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

# Decoding cost grows with pixels, not file size: a 0.6 MB PNG of 12000x12000 took 2.8 s and
# +650 MB on every redraw. 25 MP still holds a 300-dpi figure of 16x12 inches (4800x3600).
MAX_IMAGE_PIXELS = 25_000_000
SHOWN_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP"})


def image_problem(data: bytes) -> str | None:
    """None when `data` is an image of a shown format within MAX_IMAGE_PIXELS; else why not.

    Reads only the header (PIL's Image.open decodes no pixels), so it is cheap on every redraw.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image_format = image.format
    except Image.DecompressionBombError:
        return f"it is larger than {MAX_IMAGE_PIXELS:,} pixels"
    except (OSError, ValueError, SyntaxError):  # PIL's ways of saying "not an image it can read"
        return f"{len(data):,} bytes that are not a readable image"
    if image_format not in SHOWN_FORMATS:
        return f"{image_format or 'an unknown'} images are not shown"
    if width * height > MAX_IMAGE_PIXELS:
        return f"{width}x{height} is larger than {MAX_IMAGE_PIXELS:,} pixels"
    return None


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
