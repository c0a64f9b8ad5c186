"""The native kernels (native_attention.py: the decode attention, the int8 head's matmul, the int4
layers' operator) against plain torch math, their build cache, and the fallback without them.

The model-level checks (greedy choices, perplexity, batching bit for bit) run on the kernel in
tests/test_engine_fast.py, as the embedded model's fast path uses it.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from glm_client.engines import native_attention
from glm_client.engines.decode_layers import rms_norm, rotary_split, silu_mul
from glm_client.engines.native_attention import NativeBuildError, build, cached_build
from glm_client.engines.packed import INT4_GROUP, PackedLinear

LAYERS = 2


def has_compiler() -> bool:
    return bool(shutil.which("gcc") and shutil.which("g++"))  # make setup installs them as root


@pytest.fixture(scope="module")
def kernel() -> native_attention.DecodeAttention:
    if not has_compiler():
        pytest.skip("no C compiler (gcc) to build the kernel")
    loaded = native_attention.load()
    assert loaded is not None, native_attention.unavailable_reason()  # with gcc, on an x86-64 with AVX2
    return loaded


def caches_holding(lengths: list[int], kv_heads: int, dim: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """bf16 caches with room to spare, random up to each length and NaN beyond (so a read past it shows)."""
    caches = []
    for length in lengths:
        shape = (LAYERS, kv_heads, length + 5, dim)
        keys, values = (torch.full(shape, float("nan"), dtype=torch.bfloat16) for _ in range(2))
        keys[:, :, :length] = torch.randn(LAYERS, kv_heads, length, dim)
        values[:, :, :length] = torch.randn(LAYERS, kv_heads, length, dim)
        caches.append((keys, values, length))
    return caches


def expected_attention(
    cache: tuple[torch.Tensor, torch.Tensor, int],
    layer: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
) -> torch.Tensor:
    """softmax(q · K) · V over the cached tokens and the new one, in float64: [kv_heads, group, dim]."""
    keys, values, length = cache
    seen_keys = torch.cat([keys[layer, :, :length], key[:, None]], dim=1).double()
    seen_values = torch.cat([values[layer, :, :length], value[:, None]], dim=1).double()
    weights = torch.softmax(query.double() @ seen_keys.transpose(1, 2), dim=-1)
    return weights @ seen_values


# the embedded model's shape first; groups past 3 take two passes or more
@pytest.mark.parametrize(("kv_heads", "group", "dim"), [(3, 3, 64), (1, 1, 8), (2, 5, 128), (4, 8, 64)])
def test_the_kernel_attends_each_row_over_its_own_cache_and_token(kernel, kv_heads, group, dim):
    torch.manual_seed(0)
    lengths = [0, 6, 7, 8, 9, 300, 1000]  # around the kernel's blocks of 4 tokens, and a fresh cache
    caches = caches_holding(lengths, kv_heads, dim)
    rows = len(lengths)
    queries = torch.randn(rows, kv_heads, group, dim) * dim**-0.5
    keys = torch.randn(rows, kv_heads, dim).bfloat16()
    values = torch.randn(rows, kv_heads, dim).bfloat16()
    layer = 1
    out = kernel(kernel.step(caches), layer, queries, keys, values)
    for row, cache in enumerate(caches):
        expected = expected_attention(cache, layer, queries[row], keys[row], values[row])
        assert torch.allclose(out[row].double(), expected, atol=1e-5), (row, lengths[row])
        cached_keys, cached_values, length = cache
        assert torch.equal(cached_keys[layer, :, length], keys[row])  # the step's token is in the cache now
        assert torch.equal(cached_values[layer, :, length], values[row])
        assert cached_keys[layer, :, length + 1 :].isnan().all()  # and nothing past it was written
        assert cached_keys[0, :, length].isnan().all()  # nor into the other layer


def test_the_step_refuses_caches_the_kernel_cannot_read(kernel):
    keys = torch.zeros(LAYERS, 3, 16, 64)
    with pytest.raises(ValueError, match="bf16"):
        kernel.step([(keys, keys, 4)])
    full = keys.bfloat16()
    with pytest.raises(ValueError, match="no room"):
        kernel.step([(full, full, 16)])


@pytest.fixture(scope="module")
def int8_matmul() -> native_attention.Int8Matmul:
    if not has_compiler():
        pytest.skip("no C compiler (gcc) to build the kernel")
    loaded = native_attention.load_int8_matmul()
    assert loaded is not None, native_attention.unavailable_reason()
    return loaded


def int8_weight(out: int, inputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.randint(-127, 128, (out, inputs), dtype=torch.int8)
    return weight, torch.rand(out) / 100


@pytest.mark.parametrize("rows", [1, 3, 8, 11])  # 11: more rows than one pass of the kernel takes
def test_the_int8_matmul_computes_x_times_the_scaled_weights(int8_matmul, rows):
    weight, scales = int8_weight(1000, 576)
    x = torch.randn(rows, 576, dtype=torch.bfloat16)
    expected = x.double() @ (weight.double() * scales.double()[:, None]).T
    got = int8_matmul(x, weight, scales)
    assert got.dtype == torch.float32 and got.shape == (rows, 1000)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_an_int8_matmul_row_does_not_depend_on_the_other_rows(int8_matmul):
    weight, scales = int8_weight(512, 64)
    x = torch.randn(9, 64)
    together = int8_matmul(x, weight, scales)
    assert all(torch.equal(together[row], int8_matmul(x[row : row + 1], weight, scales)[0]) for row in range(9))


def test_the_int8_matmul_refuses_what_it_cannot_read(int8_matmul):
    weight, scales = int8_weight(16, 12)
    with pytest.raises(ValueError, match="multiple of 8"):
        int8_matmul(torch.randn(2, 12), weight, scales)
    weight, scales = int8_weight(16, 16)
    with pytest.raises(ValueError, match="float32 scales"):
        int8_matmul(torch.randn(2, 16), weight, scales.bfloat16())


def test_without_a_compiler_the_build_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NativeBuildError, match="no C and C\\+\\+ compilers"):
        build(tmp_path)


@pytest.mark.skipif(not has_compiler(), reason="no C compiler (gcc) to fail")
def test_a_source_that_does_not_compile_is_reported_in_one_line(tmp_path, monkeypatch):
    broken = tmp_path / "decode_attention.c"
    broken.write_text("#include <no_such_header.h>\n")
    monkeypatch.setattr(native_attention, "C_SOURCES", (broken,))
    with pytest.raises(NativeBuildError, match=r"could not build it.*no_such_header") as caught:
        build(tmp_path)
    assert "\n" not in str(caught.value)


def test_the_build_is_kept_and_reused_for_the_same_sources(tmp_path, monkeypatch):
    builds = []

    def fake_build(directory):
        builds.append(directory)
        (directory / "native_kernels.so").write_text(f"build {len(builds)}")
        return directory / "native_kernels.so"

    monkeypatch.setattr(native_attention, "build", fake_build)
    first = cached_build(tmp_path)
    assert cached_build(tmp_path) == first and first.read_text() == "build 1" and len(builds) == 1
    monkeypatch.setattr(native_attention, "FLAGS", (*native_attention.FLAGS, "-DCHANGED"))
    assert cached_build(tmp_path) != first and len(builds) == 2  # other flags (or sources): another build
    assert not builds[0].exists()  # the temporary directory went; only the library stays


@pytest.fixture(scope="module")
def int4_operator() -> None:
    if not has_compiler():
        pytest.skip("no C and C++ compilers (gcc, g++) to build the kernel")
    assert native_attention.unavailable_reason() is None


def q4_exact_weight(out: int, inputs: int) -> torch.Tensor:
    """Weights int4 groups hold exactly: (q - 8) * scale with q from 0 to 15 in every group, scale a power of 2."""
    q = torch.randint(0, 16, (out, inputs))
    q[:, ::INT4_GROUP], q[:, 1::INT4_GROUP] = 0, 15
    scale = 2.0 ** -torch.randint(5, 9, (out, inputs // INT4_GROUP)).repeat_interleave(INT4_GROUP, dim=1)
    return ((q - 8) * scale).to(torch.bfloat16)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 11])  # each tile of the kernel, and more than one pass
def test_the_int4_operator_computes_x_times_the_weights(int4_operator, rows):
    weight = q4_exact_weight(1001, 576)  # 1001: outputs left after the tiles of 4 and 2
    x = torch.randn(rows, 576, dtype=torch.bfloat16)
    got = PackedLinear(weight, None, 4, native=True)(x.float())
    assert got.dtype == torch.float32 and got.shape == (rows, 1001)
    torch.testing.assert_close(got.double(), x.double() @ weight.double().T, rtol=1e-5, atol=1e-5)


def test_an_int4_row_does_not_depend_on_the_other_rows(int4_operator):
    linear = PackedLinear(q4_exact_weight(1001, 576), None, 4, native=True)
    x = torch.randn(11, 576)
    together = linear(x)
    for count in range(1, 12):  # a row's sum runs the same whatever tile its step's row count picks
        assert all(torch.equal(linear(x[:count])[row], together[row]) for row in range(count)), count


def test_the_int4_operator_refuses_what_it_cannot_read(int4_operator):
    linear = PackedLinear(q4_exact_weight(16, 64), None, 4, native=True)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        torch.ops.glm_workbench.int4_matmul(torch.randn(2, 48), linear.weight, linear.scales)
    with pytest.raises(RuntimeError, match="float32 scales"):
        torch.ops.glm_workbench.int4_matmul(torch.randn(2, 64), linear.weight, linear.scales.bfloat16())


# The fused ops between a layer's matmuls (native_ops.cpp), against the torch ops they replace.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("heads", "kv_heads", "rows"), [(9, 3, 1), (9, 3, 8), (4, 1, 40), (8, 8, 3)])
def test_the_fused_rotary_split_is_torchs_bit_for_bit(int4_operator, dtype, heads, kv_heads, rows):
    dim = 64
    projected = torch.randn(rows, (heads + 2 * kv_heads) * dim).to(dtype)
    angles = torch.rand(rows, dim // 2) * 50
    cos, sin = (f(torch.cat((angles, angles), dim=-1)).to(dtype)[:, None] for f in (torch.cos, torch.sin))
    fused = rotary_split(projected, cos, sin, heads, kv_heads, 0.125, fused=True)
    expected = rotary_split(projected, cos, sin, heads, kv_heads, 0.125, fused=False)
    for got, want in zip(fused, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and got.is_contiguous()
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_fused_norm_and_silu_round_as_torchs_ops_do(int4_operator, dtype):
    """Their float32 sums and exp differ from torch's in the last bits: at most one step of the dtype apart."""
    x = (torch.randn(8, 576) * 3).to(dtype)
    weight = (torch.rand(576) + 0.5).to(dtype)
    step = 2**-7 if dtype == torch.bfloat16 else 1e-5  # bf16's relative rounding step, float32's noise
    for fused, expected in (
        (rms_norm(x, weight, 1e-5, fused=True), rms_norm(x, weight, 1e-5, fused=False)),
        (silu_mul(x, fused=True), silu_mul(x, fused=False)),
    ):
        assert fused.dtype == expected.dtype and fused.shape == expected.shape
        torch.testing.assert_close(fused, expected, rtol=step, atol=step)


def test_a_fused_ops_row_does_not_depend_on_the_other_rows(int4_operator):
    x = torch.randn(300, 1536).to(torch.bfloat16)  # enough rows for several threads
    weight = torch.rand(1536).to(torch.bfloat16)
    for op in (lambda rows: rms_norm(rows, weight, 1e-5, fused=True), lambda rows: silu_mul(rows, fused=True)):
        together = op(x)
        assert all(torch.equal(op(x[:count]), together[:count]) for count in (1, 7, 299))


def test_the_fused_ops_refuse_what_they_cannot_read(int4_operator):
    with pytest.raises(RuntimeError, match="weight \\[width\\] of x's dtype"):
        torch.ops.glm_workbench.rms_norm(torch.randn(2, 64), torch.randn(64).bfloat16(), 1e-5)
    with pytest.raises(RuntimeError, match="2 \\* intermediate"):
        torch.ops.glm_workbench.silu_mul(torch.randn(2, 63))
    with pytest.raises(RuntimeError, match="heads \\+ 2 kv_heads"):
        torch.ops.glm_workbench.rotary_split(
            torch.randn(2, 64 * 4), torch.randn(2, 1, 64), torch.randn(2, 1, 64), 3, 1, 1.0
        )
