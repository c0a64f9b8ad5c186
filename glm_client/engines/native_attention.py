"""The decode steps' C kernels, where this machine can build them: the attention as one call a layer
(decode_attention.c), and the int8 output head's matmul for all rows at once (int8_matmul.c).

Why: with 8 users on the 2-core CPU machine, the per-row attention of fast_llama's torch path
took half of each decode step (bench/bench_attention.py): per sequence and layer
two bmm's, a softmax and a dozen small ops, with torch splitting a bmm over 3 kv heads unevenly
on 2 threads, over a float32 cache. The kernel runs every (sequence, kv head) pair of a step in
one OpenMP loop over a bf16 cache: the keys and values are bf16 already (the model's dtype), so
the cache holds the same numbers in half the memory.

The sources are compiled once a process (well under a second) with the system C compiler into a
temporary directory, and loaded with ctypes, which lets go of the GIL during the call. Without a
compiler, on a CPU without AVX2 and FMA (the compile fails), or off x86, `load()` and
`load_int8_matmul()` return None, `unavailable_reason()` says why, and fast_llama keeps its torch path.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCES = (Path(__file__).with_name("decode_attention.c"), Path(__file__).with_name("int8_matmul.c"))
# -march=native: built where it runs, each process; -fopenmp links libgomp.so.1, which resolves to
# the copy torch has loaded, so the kernel's threads are torch's.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 60

log = logging.getLogger(__name__)
_pointers = ctypes.POINTER(ctypes.c_void_p)


class NativeBuildError(RuntimeError):
    """The kernel could not be built or loaded here; the message says why in one sentence."""


@dataclass
class DecodeStep:
    """The KV caches of one forward's decode rows, as the arrays of pointers the kernel takes.

    Valid while no cache grows: fast_llama reserves room for the whole forward first.
    """

    rows: int
    keys: ctypes.Array[ctypes.c_void_p]
    values: ctypes.Array[ctypes.c_void_p]
    capacity: torch.Tensor  # int64, [rows]
    past: torch.Tensor  # int64, [rows]: tokens cached before this step; the new one goes there


class DecodeAttention:
    """`decode_attention` of the built library, with its arguments checked and converted."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._call = library.decode_attention
        self._call.restype = ctypes.c_int
        self._call.argtypes = [ctypes.c_int] * 6 + [_pointers, _pointers] + [ctypes.c_void_p] * 6

    def step(self, caches: list[tuple[torch.Tensor, torch.Tensor, int]]) -> DecodeStep:
        """The step of caches given as (keys, values, tokens held): bf16, [layers, kv_heads, capacity, dim]."""
        for keys, values, length in caches:
            if keys.dtype != torch.bfloat16 or not keys.is_contiguous() or not values.is_contiguous():
                raise ValueError("the decode attention kernel takes contiguous bf16 caches")
            if length >= keys.shape[2] or keys.shape != values.shape:
                raise ValueError("a cache has no room for the step's token")
        pointer_array = ctypes.c_void_p * len(caches)
        return DecodeStep(
            rows=len(caches),
            keys=pointer_array(*(keys.data_ptr() for keys, _, _ in caches)),
            values=pointer_array(*(values.data_ptr() for _, values, _ in caches)),
            capacity=torch.tensor([keys.shape[2] for keys, _, _ in caches], dtype=torch.int64),
            past=torch.tensor([length for _, _, length in caches], dtype=torch.int64),
        )

    def __call__(
        self, step: DecodeStep, layer: int, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Write each row's key and value into its cache at `past`, attend over the cache up to it.

        queries: float32 [rows, kv_heads, group, dim], already scaled; keys, values: bf16
        [rows, kv_heads, dim]. Returns float32 [rows, kv_heads, group, dim].
        """
        queries, keys, values = queries.contiguous(), keys.contiguous(), values.contiguous()
        out = torch.empty_like(queries)
        self.into(step, layer, queries, keys, values, out)
        return out

    def into(
        self,
        step: DecodeStep,
        layer: int,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """`__call__` into `out`, for callers whose tensors are contiguous already (decode_layers.py)."""
        rows, kv_heads, group, dim = queries.shape
        if rows != step.rows or queries.dtype != torch.float32 or dim % 8:
            raise ValueError("queries do not match the step (float32, one row per cache, dim a multiple of 8)")
        tensors = (queries, keys, values, out)
        if not all(tensor.is_contiguous() for tensor in tensors) or out.shape != queries.shape:
            raise ValueError("the kernel takes contiguous tensors, and an output shaped like the queries")
        status = self._call(
            torch.get_num_threads(),
            rows,
            layer,
            kv_heads,
            group,
            dim,
            step.keys,
            step.values,
            step.capacity.data_ptr(),
            step.past.data_ptr(),
            queries.data_ptr(),
            keys.data_ptr(),
            values.data_ptr(),
            out.data_ptr(),
        )
        if status:
            raise MemoryError("the decode attention kernel could not allocate its scratch memory")


class Int8Matmul:
    """`int8_matmul` of the built library: y = x @ W.T over int8 weights with one scale per output row."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._call = library.int8_matmul
        self._call.restype = ctypes.c_int
        self._call.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 4

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """x: [rows, in] (any float dtype); weight: int8 [out, in]; scales: float32 [out]. Returns float32 [rows, out]."""
        x = x.to(torch.float32).contiguous()
        out, inputs = weight.shape
        if weight.dtype != torch.int8 or scales.dtype != torch.float32 or x.shape[1] != inputs or inputs % 8:
            raise ValueError("the int8 matmul takes int8 weights, float32 scales and inputs a multiple of 8 wide")
        if not (weight.is_contiguous() and scales.is_contiguous()):
            raise ValueError("the int8 matmul takes contiguous weights and scales")
        y = torch.empty((x.shape[0], out), dtype=torch.float32)
        threads = torch.get_num_threads()
        self._call(threads, x.shape[0], out, inputs, x.data_ptr(), weight.data_ptr(), scales.data_ptr(), y.data_ptr())
        return y


def build(directory: Path) -> ctypes.CDLL:
    """Compile the SOURCES into one library in `directory` and load it; NativeBuildError says why not."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise NativeBuildError(f"the kernel is written for x86-64 (AVX2), not {platform.machine()}")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise NativeBuildError("no C compiler (cc or gcc) is on PATH")
    target = directory / "native_kernels.so"
    try:
        done = subprocess.run(
            [compiler, *FLAGS, *map(str, SOURCES), "-o", str(target)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NativeBuildError(f"{compiler} did not run: {error}") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise NativeBuildError(f"{compiler} could not build it (no AVX2/FMA, or no OpenMP?): {first}")
    try:
        return ctypes.CDLL(str(target))
    except OSError as error:
        raise NativeBuildError(f"the built library did not load: {error}") from None


@functools.cache
def _loaded() -> ctypes.CDLL | str:
    with tempfile.TemporaryDirectory(prefix="glm-workbench-native-") as directory:
        try:
            return build(Path(directory))  # loaded: the file may go
        except NativeBuildError as error:
            log.info("Decode attention and the int8 head run on torch ops: %s", error)
            return str(error)


@functools.cache
def load() -> DecodeAttention | None:
    """The attention kernel, built on first use in this process; None where it cannot be built here."""
    library = _loaded()
    return DecodeAttention(library) if isinstance(library, ctypes.CDLL) else None


@functools.cache
def load_int8_matmul() -> Int8Matmul | None:
    """The int8 matmul kernel, built on first use in this process; None where it cannot be built here."""
    library = _loaded()
    return Int8Matmul(library) if isinstance(library, ctypes.CDLL) else None


def unavailable_reason() -> str | None:
    """Why the kernels are not there, in one sentence; None when they are."""
    library = _loaded()
    return library if isinstance(library, str) else None
