"""Named limits for the kernel sandbox: one place to read and tune them."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# A model-written cell that loops forever must not hang the conversation.
DEFAULT_TIMEOUT_S = 60.0
# After a timeout the kernel gets this long to answer the interrupt before it is restarted.
INTERRUPT_GRACE_S = 3.0
# Cold start of ipykernel takes about a second; the margin covers loaded CI machines.
KERNEL_START_TIMEOUT_S = 60.0
# How often a waiting execute checks that the kernel process is still alive.
ALIVE_CHECK_INTERVAL_S = 0.2

# RLIMIT_AS caps address space, not resident memory, and address space is what libraries
# reserve generously. Measured here (2 cores, MALLOC_ARENA_MAX=2): an idle kernel maps
# 0.2 GB; after importing numpy, pandas, matplotlib and torch, 1.2 GB. Many-core machines
# map more (a stack per BLAS/OpenMP thread and per-thread buffers), so the issue's ~2 GiB
# would leave little room for data and could break `import torch` there. 4 GiB still stops a
# memory bomb long before it hurts the host. None disables the limit (needed for CUDA,
# which maps far more address space than it uses).
DEFAULT_MEMORY_LIMIT = 4 * GiB

# What one execution keeps: enough for any sensible cell, bounded for `print('x' * 10**9)`.
MAX_RESULT_TEXT_CHARS = 2_000_000
MAX_RESULT_BINARY_BYTES = 50 * MiB

# What the model reads of one execution (head and tail are kept, the middle is dropped).
MAX_OBSERVATION_CHARS = 20_000
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
