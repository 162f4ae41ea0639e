"""Products of each state with its own token ids' head rows, in one kernel on CUDA.

The plausible and candidate forms of the tilt need, for row n and its K token ids,
x_n . W[idx_nk]: N x K dot products with rows of a (V, D) head. Eager torch gathers the
rows into an (N, K, D) tensor, widens it to float32 and multiplies: three passes over
N x K x D elements, or one (N, D) x (D, V) product when that moves fewer bytes
(``Head.dense_is_cheaper``). ``rows_dot`` reads each picked head row once, widens it in
registers and accumulates in float32: the same values as the eager float32 path, at the
bytes of the rows it picks and 2 N K D FLOPs.

It is the custom op ``sglang_esamp::rows_dot``, so a traced or captured step sees one
kernel, and on meta tensors (``tools/estimate.py``) it has a shape and no data. The kernel
is Triton's: on CUDA it compiles; elsewhere it runs only under Triton's interpreter
(``TRITON_INTERPRET=1``, how tests check it on a CPU). ``usable`` says where ``Head`` takes it.

Shapes: N rows, K token ids per row, D hidden, V vocabulary.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton: the eager paths only
    triton = None

BLOCK_K = 16  # token ids per program
BLOCK_D = 128  # hidden units per load


def usable(weight: torch.Tensor) -> bool:
    """Whether the kernel can run for a head with this ``weight``: Triton and a CUDA device."""
    return triton is not None and weight.is_cuda


if triton is not None:

    @triton.jit
    def _rows_dot_kernel(x_ptr, w_ptr, idx_ptr, out_ptr, k, d, stride_x, stride_w, stride_idx, stride_out,
                         BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,) positions among the row's K ids
        live = cols < k
        ids = tl.load(idx_ptr + row * stride_idx + cols, mask=live, other=0).to(tl.int64)
        acc = tl.zeros([BLOCK_K], dtype=tl.float32)
        for start in range(0, d, BLOCK_D):
            units = start + tl.arange(0, BLOCK_D)
            inside = units < d
            x = tl.load(x_ptr + row * stride_x + units, mask=inside, other=0.0).to(tl.float32)  # (BLOCK_D,)
            w = tl.load(w_ptr + ids[:, None] * stride_w + units[None, :], mask=live[:, None] & inside[None, :],
                        other=0.0).to(tl.float32)  # (BLOCK_K, BLOCK_D) picked rows, widened
            acc += tl.sum(w * x[None, :], axis=1)
        tl.store(out_ptr + row * stride_out + cols, acc, mask=live)


@torch.library.custom_op("sglang_esamp::rows_dot", mutates_args=())
def rows_dot(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, D) float32 states, (V, D) head weight, (N, K) int64 ids -> (N, K) float32 products."""
    n, k = idx.shape
    x, weight, idx = x.contiguous(), weight.contiguous(), idx.contiguous()
    out = torch.empty(n, k, dtype=torch.float32, device=x.device)
    if n and k:
        grid = (n, triton.cdiv(k, BLOCK_K))
        _rows_dot_kernel[grid](x, weight, idx, out, k, x.shape[1], x.stride(0), weight.stride(0), idx.stride(0),
                               out.stride(0), BLOCK_K=BLOCK_K, BLOCK_D=BLOCK_D)
    return out


@rows_dot.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.new_empty(idx.shape, dtype=torch.float32)
