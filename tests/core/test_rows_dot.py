"""The fused gathered-row products (core/rows_dot.py) against float64, on this CPU through
Triton's interpreter (the kernel a CUDA server compiles), and as the tilt's head uses them."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

CHILD = r"""
import json, torch
from sglang_esamp.core import Head
from sglang_esamp.core.rows_dot import rows_dot

g = torch.Generator().manual_seed(0)
errors = {}
for dtype in (torch.bfloat16, torch.float32):
    n, k, d, v = 5, 37, 200, 300  # K and D not multiples of the kernel's blocks
    w = torch.randn(v, d, generator=g).to(dtype)
    x = torch.randn(n, 2 * d, generator=g)[:, ::2]  # strided states
    idx = torch.randint(0, v, (n, k), generator=g)
    idx[0, :4] = 7  # a row that picks one token several times
    want = torch.stack([w.double()[idx[i]] @ x[i].double() for i in range(n)])  # (N, K)
    got = rows_dot(x.float(), w, idx)
    errors[str(dtype)] = float((got.double() - want).abs().max() / want.abs().max())
    unfused = Head(w).at(x, idx, dense=False)  # the eager float32 gather
    fused = Head(w, fused=True).at(x, idx, dense=False)
    errors[str(dtype) + " head"] = float((fused - unfused).abs().max() / unfused.abs().max())
    errors[str(dtype) + " empty"] = list(rows_dot(x.float(), w, idx[:, :0]).shape)
print(json.dumps(errors))
"""


def test_the_kernel_is_the_float32_product_of_the_picked_rows():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    for dtype in ("torch.bfloat16", "torch.float32"):
        assert errors[dtype] < 1e-6, errors  # float32 accumulation of exactly widened rows
        assert errors[dtype + " head"] < 1e-6, errors  # the same values as the eager path it replaces
        assert errors[dtype + " empty"] == [5, 0]


def test_a_fused_head_gathers_where_the_eager_one_multiplies_the_whole_head():
    """A Llama-2-7B head at 32 x 16 rows and 64 tokens each: the eager gather moves 8 bytes per
    picked element and loses to one product with the head; the kernel reads each picked row
    once (2 bytes per element) and wins."""
    from sglang_esamp.core import Head

    w = torch.empty(32000, 4096, dtype=torch.bfloat16, device="meta")
    assert Head(w).dense_is_cheaper(512, 64) and not Head(w, fused=True).dense_is_cheaper(512, 64)
    assert Head(w, fused=True).sliced(100).fused
