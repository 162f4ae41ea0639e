"""The head's gathered products (core/head.py ``Head.at``): exact against float64 however
they are cut into blocks, and the blocks' temporaries measured within the budget."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sglang_esamp.core import Head


class LargestTemporary(TorchDispatchMode):
    """Records the largest tensor any operation makes (an outside measurement of the peak)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.nbytes)
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("budget", [10**9, 8 * 16 * 7, 8 * 16 * 60, 1])  # one block; 7 tokens a block; rows of 50; one pair
def test_blocks_are_exact(dtype, budget):
    g = torch.Generator().manual_seed(0)
    n, k, v, d = 6, 50, 80, 16
    head = Head(torch.randn(v, d, generator=g).to(dtype))
    x = torch.randn(n, d, generator=g)
    idx = torch.randint(0, v, (n, k), generator=g)
    want = torch.stack([head.weight.double()[idx[i]] @ x[i].double() for i in range(n)])  # (N, K)
    torch.testing.assert_close(head.at(x, idx, budget, dense=False).double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_dense_choice_is_the_product_in_the_heads_dtype(dtype):
    """Many tokens of a small vocabulary: one product with the head moves fewer bytes than the
    gathered rows. The state enters it in the head's dtype and the product comes out in it, as
    in the dense tilt: within one rounding of that dtype (bf16: 2^-8) of the float64 products."""
    g = torch.Generator().manual_seed(1)
    n, k, v, d = 6, 50, 80, 16
    head = Head(torch.randn(v, d, generator=g).to(dtype))
    x = torch.randn(n, d, generator=g)
    idx = torch.randint(0, v, (n, k), generator=g)
    assert head.dense_is_cheaper(n, k) and not head.dense_is_cheaper(n, 2)
    product = head.weight.element_size() * n * v  # the (N, V) product, in the head's dtype
    assert head.dense_is_cheaper(n, k, budget=product) and not head.dense_is_cheaper(n, k, budget=product - 1)  # it must fit
    want = torch.stack([head.weight.double()[idx[i]] @ x[i].to(dtype).double() for i in range(n)])
    rounding = 2**-8 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(head.at(x, idx).double(), want, rtol=rounding, atol=1e-5)


def test_temporaries_stay_within_the_budget():
    """A top-p that keeps most of the vocabulary: the unblocked gather would be N*K*D*4 = 32
    MiB in float32; with a 1 MiB budget no temporary passes 1 MiB but the (N, K) result."""
    n, k, v, d = 32, 4096, 5000, 64
    head = Head(torch.randn(v, d, dtype=torch.bfloat16))
    x = torch.randn(n, d)
    idx = torch.randint(0, v, (n, k))
    budget = 2**20
    with LargestTemporary() as seen:
        out = head.at(x, idx, budget, dense=False)
    result = n * k * 4
    assert result < budget  # so the result does not hide a temporary
    assert seen.largest <= budget
    with LargestTemporary() as unbounded:
        head.at(x, idx, 10**12, dense=False)
    assert unbounded.largest >= n * k * d * 4  # the measurement sees the gather when it is not cut
    torch.testing.assert_close(out, head.at(x, idx, 10**12, dense=False))
    with LargestTemporary() as chosen:  # left to choose, it takes the product: (N, V) float32, within the budget
        head.at(x, idx, budget)
    assert chosen.largest == n * v * 4 <= budget
