"""The decode steps' native kernels, where this machine can build them: the attention as one call a
layer (decode_attention.c), the int8 output head's matmul for all rows at once (int8_matmul.c), and the
int4 layers' matmul (int4_matmul.c, a torch operator through native_ops.cpp).

Why: with 8 users on the 2-core CPU machine, the per-row attention of fast_llama's torch path
took half of each decode step (bench/bench_attention.py): per sequence and layer
two bmm's, a softmax and a dozen small ops, with torch splitting a bmm over 3 kv heads unevenly
on 2 threads, over a float32 cache. The kernel runs every (sequence, kv head) pair of a step in
one OpenMP loop over a bf16 cache: the keys and values are bf16 already (the model's dtype), so
the cache holds the same numbers in half the memory.

The sources are compiled into one library with the system's gcc and g++ (about 8 s, the C++
operator against torch's headers), kept in the cache directory for these sources, torch and CPU,
and loaded with ctypes, which lets go of the GIL during a call, and as torch operators. Without
compilers, on a CPU without AVX2 and FMA (the compile fails), or off x86, `load()` and the other
loaders return None, `unavailable_reason()` says why, and fast_llama keeps its torch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from glm_client.config import Settings

HERE = Path(__file__).parent
C_SOURCES = (HERE / "decode_attention.c", HERE / "int8_matmul.c", HERE / "int4_matmul.c")
OPERATORS_SOURCE = HERE / "native_ops.cpp"
# -march=native: built where it runs (the cache keys on the CPU's flags); -fopenmp links
# libgomp.so.1, which resolves to the copy torch has loaded, so the kernels' threads are torch's.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC")
TORCH_DIR = Path(torch.__file__).parent
TORCH_FLAGS = (
    "-std=c++17",
    "-w",  # torch's headers warn under gcc 12
    f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
    f"-I{TORCH_DIR / 'include'}",
)
TORCH_LIBRARIES = (
    f"-L{TORCH_DIR / 'lib'}",
    f"-Wl,-rpath,{TORCH_DIR / 'lib'}",
    "-lc10",
    "-ltorch_cpu",
)
COMPILE_TIMEOUT_S = 120

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


def build(directory: Path) -> Path:
    """Compile the C and C++ sources into one library in `directory`; NativeBuildError says why not."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise NativeBuildError(f"the kernels are written for x86-64 (AVX2), not {platform.machine()}")
    c_compiler, cpp_compiler = shutil.which("cc") or shutil.which("gcc"), shutil.which("c++") or shutil.which("g++")
    if c_compiler is None or cpp_compiler is None:
        raise NativeBuildError("no C and C++ compilers (gcc and g++) are on PATH")
    objects = [directory / f"{source.name}.o" for source in (*C_SOURCES, OPERATORS_SOURCE)]
    for source, target in zip(C_SOURCES, objects[:-1], strict=True):
        _compile([c_compiler, *FLAGS, "-c", str(source), "-o", str(target)])
    _compile([cpp_compiler, *FLAGS, *TORCH_FLAGS, "-c", str(OPERATORS_SOURCE), "-o", str(objects[-1])])
    library = directory / "native_kernels.so"
    _compile([cpp_compiler, "-shared", "-fopenmp", *map(str, objects), *TORCH_LIBRARIES, "-o", str(library)])
    return library


def _compile(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NativeBuildError(f"{command[0]} did not run: {error}") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise NativeBuildError(f"{command[0]} could not build it (no AVX2/FMA, or no OpenMP?): {first}")


def cached_build(cache_dir: Path) -> Path:
    """The library built for these sources, flags, torch and CPU: from `cache_dir` where it is there
    (the C++ operator takes ~8 s to build, each app and test process would pay it), else built and kept."""
    key = hashlib.sha256()
    for part in (*FLAGS, *TORCH_FLAGS, torch.__version__, _cpu_flags()):
        key.update(part.encode() + b"\0")
    for source in (*C_SOURCES, OPERATORS_SOURCE):
        key.update(source.read_bytes())
    library = cache_dir / "native" / key.hexdigest()[:16] / "native_kernels.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as directory:
            os.replace(build(Path(directory)), library)  # whole, even with processes building side by side
    return library


def _cpu_flags() -> str:
    """-march=native builds for this CPU: a cache shared by several machines keeps one build each."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")


@functools.cache
def _loaded() -> ctypes.CDLL | str:
    try:
        library = cached_build(Settings.from_env().cache_dir)
        torch.ops.load_library(str(library))  # registers the operators (native_ops.cpp)
        return ctypes.CDLL(str(library))  # the same handle: the C kernels
    except (NativeBuildError, OSError, RuntimeError) as error:
        log.info("Decode steps run on torch ops, not the native kernels: %s", error)
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
