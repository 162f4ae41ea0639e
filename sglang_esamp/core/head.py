"""The model's LM head as the tilt needs it: the distiller's logits go through exactly the
model-side processing the model's own logits went through.

``Head`` is softcap(scale * (W x + bias)), with each part present only when the model has
it (SGLang's ``LogitsProcessor``: ``logit_scale``, ``final_logit_softcapping``; the head's
bias). ``VocabMoments`` are the second moments of a linear head's rows over the whole
vocabulary: with them the least-squares fit of one state's logits on another's, over every
token, costs D^2 per row instead of a (D, V) product.

Shapes: N rows, V vocabulary, D hidden, K tokens per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .rows_dot import rows_dot

GATHER_BYTES = 64 * 2**20  # the most one block of gathered head rows may take, its float32 copy included
GATHER_BYTES_PER_ELEMENT = 8  # per gathered element: the row in the head's dtype (at most 4 bytes) and in float32


@dataclass
class Head:
    weight: torch.Tensor  # (V, D) the model's own head weight, not a copy
    bias: torch.Tensor | None = None  # (V,)
    scale: float | None = None
    softcap: float | None = None
    fused: bool = False  # gathered rows' products in one kernel (core/rows_dot.py), where ``rows_dot.usable``

    @property
    def linear(self) -> bool:
        """Logits affine in the state (no softcapping)."""
        return not self.softcap

    def logits(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) states -> (N, V) float32 logits; with ``idx`` (N, K) token ids, only those."""
        if idx is None:
            z = (x.to(self.weight.dtype) @ self.weight.t()).float()  # (N, V)
            if self.bias is not None:
                z = z + self.bias.float()
        else:
            z = self.at(x, idx)  # (N, K)
            if self.bias is not None:
                z = z + self.bias.float()[idx]
        if self.scale is not None:
            z = z * self.scale
        if self.softcap:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z

    def linear_part(self, u: torch.Tensor, idx: torch.Tensor | None = None, native: bool = False) -> torch.Tensor:
        """scale * (W u): (N, D) -> (N, V) float32, or (N, K) at token ids ``idx`` (N, K). On a
        linear head, l(h) - l(h_hat) = linear_part(h - h_hat): one product for the two.
        ``native``: the (N, V) product stays in the head's dtype (no float32 copy of it)."""
        if self.scale is not None:
            u = u * self.scale  # (N, D): cheaper than scaling the product
        if idx is not None:
            return self.at(u, idx)
        z = u.to(self.weight.dtype) @ self.weight.t()
        return z if native else z.float()

    def dense_is_cheaper(self, n: int, k: int, budget: int = GATHER_BYTES) -> bool:
        """Whether ``at`` for (n, k) token ids reads and writes fewer bytes as one (n, D) x (D, V)
        product, gathered after (the head once and n x V products in its dtype, within ``budget``),
        than by gathering n x k head rows (each in the head's dtype and in float32; read once by
        the fused kernel)."""
        vocab, dim = self.weight.shape
        size = self.weight.element_size()
        product = size * n * vocab
        per_element = size if self.fused else GATHER_BYTES_PER_ELEMENT
        return product <= budget and size * vocab * dim + 2 * product < per_element * n * k * dim

    def at(self, x: torch.Tensor, idx: torch.Tensor, budget: int = GATHER_BYTES, dense: bool | None = None) -> torch.Tensor:
        """(N, D) states, (N, K) token ids -> (N, K) float32 products x_n . W[idx_nk].

        ``dense`` (default: whichever moves fewer bytes, ``dense_is_cheaper``): one product with
        the whole head in its dtype (state and product rounded to it, as in the dense tilt), and
        the (N, K) entries gathered from it before they are widened to float32. Otherwise the
        head rows are multiplied in float32: by ``rows_dot``'s one kernel on a ``fused`` head,
        else gathered a block of rows and tokens at a time, so that the temporaries stay within
        ``budget`` bytes whatever N and K are (K reaches the whole vocabulary under a loose
        top-p). Both choices follow from the shapes: no sync."""
        n, k = idx.shape
        if self.dense_is_cheaper(n, k, budget) if dense is None else dense:
            return (x.to(self.weight.dtype) @ self.weight.t()).gather(1, idx).float()
        if self.fused:
            return rows_dot(x.float(), self.weight, idx)
        per_token = GATHER_BYTES_PER_ELEMENT * x.shape[-1]  # bytes of one gathered row and its copies
        tokens = max(1, min(k, budget // per_token))  # per block
        rows = max(1, budget // (per_token * tokens))
        x = x.float()
        if rows >= n and tokens == k:  # one block
            return torch.einsum("nd,nkd->nk", x, self.weight[idx].float())
        out = torch.empty(n, k, dtype=torch.float32, device=x.device)
        for r in range(0, n, rows):
            for c in range(0, k, tokens):
                block = self.weight[idx[r:r + rows, c:c + tokens]].float()  # (rows, tokens, D)
                out[r:r + rows, c:c + tokens] = torch.einsum("nd,nkd->nk", x[r:r + rows], block)
        return out

    def sliced(self, vocab: int) -> Head:
        """The same head over the first ``vocab`` tokens (a padded weight's real rows)."""
        bias = None if self.bias is None else self.bias[:vocab]
        return Head(self.weight[:vocab], bias, self.scale, self.softcap, self.fused)


@dataclass
class VocabMoments:
    """For a linear head l(x) = s (W x + c): with centred rows W~ = W - w_mean and c~ = c - c_mean,
    sum_v l~_v(x) l~_v(y) = s^2 (x^T G y + x^T g + y^T g + cc)."""

    gram: torch.Tensor  # (D, D) W~^T W~, in the head's dtype
    cross: torch.Tensor  # (D,) W~^T c~
    bias_sq: float  # c~^T c~
    mean_row: torch.Tensor  # (D,) w_mean
    mean_bias: float  # c_mean
    scale: float

    @classmethod
    def of(cls, head: Head, chunk_bytes: int = 64 * 2**20) -> VocabMoments:
        """Two passes over the head in chunks of at most ``chunk_bytes`` of float32 rows (2,048
        rows at hidden size 8192): no float32 copy of a large head, whatever its vocabulary."""
        vocab, dim = head.weight.shape
        chunk = max(1, chunk_bytes // (4 * dim))
        device = head.weight.device
        bias = head.bias if head.bias is not None else torch.zeros(vocab, device=device)
        mean_row = sum(head.weight[i:i + chunk].float().sum(0) for i in range(0, vocab, chunk)) / vocab  # (D,)
        mean_bias = float(bias.float().mean())
        gram = torch.zeros(dim, dim, device=device)
        cross = torch.zeros(dim, device=device)
        for i in range(0, vocab, chunk):
            w = head.weight[i:i + chunk].float() - mean_row  # centred first: no cancellation in float32
            c = bias[i:i + chunk].float() - mean_bias
            gram += w.t() @ w
            cross += w.t() @ c
        bias_sq = float(((bias.float() - mean_bias) ** 2).sum())
        return cls(gram.to(head.weight.dtype), cross, bias_sq, mean_row, mean_bias, 1.0 if head.scale is None else head.scale)

    def fit(self, h: torch.Tensor, h_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) a and b of the least-squares fit l(h_hat) ~ a l(h) + b over every token. Its
        one (N, D) x (D, D) product runs in the head's dtype, as the head's own product does:
        on SmolLM2's bf16 head that moves a by at most 4e-4 of itself (a logit by 0.02 at
        most), less than the bf16 rounding of the head product the tilt adds it to; in
        float32 on an H100 it would take a sixth of the roofline time of a 7B step's ESamp."""
        h, h_hat = h.float(), h_hat.float()
        gh = (h.to(self.gram.dtype) @ self.gram).float()  # (N, D)
        cov = (gh * h_hat).sum(-1) + (h + h_hat) @ self.cross + self.bias_sq
        var = (gh * h).sum(-1) + 2 * (h @ self.cross) + self.bias_sq
        a = cov / var.clamp_min(1e-6)
        b = self.scale * ((h_hat @ self.mean_row + self.mean_bias) - a * (h @ self.mean_row + self.mean_bias))
        return a, b
