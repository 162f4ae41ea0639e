"""filter_mask against a per-row reference of top-k, top-p and min-p."""

import torch

from sglang_esamp.runtime.filters import filter_mask


def reference(logits, t, k, p, m):
    probs = torch.softmax(logits.double() / t, -1)
    order = probs.argsort(descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    total = 0.0
    for rank, tok in enumerate(order.tolist()):
        pr = float(probs[tok])
        if rank >= k or total > p or pr < m * float(probs.max()):
            if rank > 0:
                break
        keep[tok] = True
        total += pr
    return keep


def test_matches_reference_per_row():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, generator=g) * 3
    t = torch.tensor([1.0, 0.7, 1.0, 1.3, 1.0])
    k = torch.tensor([40, 5, 40, 40, 3])
    p = torch.tensor([1.0, 1.0, 0.8, 0.5, 0.9])
    m = torch.tensor([0.0, 0.0, 0.0, 0.1, 0.05])
    got = filter_mask(logits, t, k, p, m)
    for i in range(5):
        assert torch.equal(got[i], reference(logits[i], t[i], int(k[i]), float(p[i]), float(m[i]))), i
    assert got[0].all() and got[1].sum() == 5 and got[4].sum() <= 3


def test_min_p_fast_path_matches_the_sorted_filter():
    import torch

    from sglang_esamp.runtime.filters import filter_mask

    torch.manual_seed(3)
    logits = torch.randn(6, 500) * 3
    logits[0, 10] = float("-inf")
    temp = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.7, 1.3])
    min_p = torch.tensor([0.1, 0.05, 0.3, 0.0, 0.2, 0.01])
    full = filter_mask(logits, temp, torch.full((6,), 500), torch.ones(6), min_p)
    fast = filter_mask(logits, temp, torch.full((6,), 500), torch.ones(6), min_p, min_p_only=True)
    assert torch.equal(full, fast)
