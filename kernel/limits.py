"""Named limits for the kernel sandbox: one place to read and tune them."""

from __future__ import annotations

from glm_client.config import DEFAULT_KERNEL_MEMORY_MB, DEFAULT_KERNEL_TIMEOUT_S

# What the model reads of one execution at most (glm_client/observations.py), named with the other limits.
from glm_client.observations import MAX_OBSERVATION_CHARS as MAX_OBSERVATION_CHARS

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# How long one code cell may run (KERNEL_TIMEOUT's default; the setting is what the app passes).
CELL_TIMEOUT_S = DEFAULT_KERNEL_TIMEOUT_S
# After a timeout the kernel gets this long to answer the interrupt before it is restarted.
INTERRUPT_GRACE_S = 3.0
# Cold start of ipykernel takes about a second; the margin covers loaded CI machines.
KERNEL_START_TIMEOUT_S = 60.0
# How often a waiting execute checks that the kernel process is still alive.
ALIVE_CHECK_INTERVAL_S = 0.2

# RLIMIT_AS of a kernel process: KERNEL_MEMORY_MB's default (measured figures in
# glm_client/config.py). None disables the limit (needed for CUDA, which maps far more
# address space than it uses).
DEFAULT_MEMORY_LIMIT = DEFAULT_KERNEL_MEMORY_MB * MiB

# What one execution keeps: enough for any sensible cell, bounded for `print('x' * 10**9)`.
MAX_RESULT_TEXT_CHARS = 2_000_000
MAX_RESULT_BINARY_BYTES = 50 * MiB

# Frames of a traceback shown to the model; the innermost ones say the most.
MAX_TRACEBACK_FRAMES = 5

# Uploads land in the session's working directory; bigger files belong elsewhere.
MAX_UPLOAD_BYTES = 200 * 1000 * 1000
# All uploads of one session together: the disk is shared by every user of the app.
MAX_SESSION_UPLOAD_BYTES = 1000 * 1000 * 1000
# Files reported by list_files(), so a cell that writes a million files cannot stall the UI.
MAX_LISTED_FILES = 1000
# Directory entries looked at to find them (a huge listing in one folder costs its whole read).
MAX_SCANNED_ENTRIES = 20_000
