"""Baseline samplers SGLang lacks, as SGLang custom logit processors.

SGLang applies a request's custom logit processor to the raw logits before temperature, top-p
and min-p (the server needs ``--enable-custom-logit-processor``). Both processors rescale a
row's logits so that the sampler's division by the request's own temperature ``T`` yields
the temperature they want:

- ``FirstTokenTemperature`` (FIRE, Chen et al. 2024): the first generated token at
  ``first_temperature``, every later token at ``T``.
- ``EntropyTemperature`` (EDT, Zhang et al. 2024): ``T_t = t0 * base ** (theta / H_t)``,
  with ``H_t`` the entropy (nats) of the row's distribution at temperature 1. A confident
  step (low entropy) gets a low temperature, an uncertain one a temperature near ``t0``.

Request fields (``custom_params``): FIRE ``{"temperature": T, "first_temperature": 3.0}``;
EDT ``{"temperature": T, "t0": 1.0, "base": 0.8, "theta": 1.0}``.
"""

from __future__ import annotations

import torch
from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor


class FirstTokenTemperature(CustomLogitProcessor):
    def __call__(self, logits: torch.Tensor, custom_param_list: list[dict]) -> torch.Tensor:
        # logits: (rows, V), raw
        scale = []
        for p in custom_param_list:
            req = p.get("__req__")
            first = req is not None and len(req.output_ids) == 0
            scale.append(p["temperature"] / p["first_temperature"] if first else 1.0)
        return logits * torch.tensor(scale, dtype=logits.dtype, device=logits.device).unsqueeze(-1)


class EntropyTemperature(CustomLogitProcessor):
    def __call__(self, logits: torch.Tensor, custom_param_list: list[dict]) -> torch.Tensor:
        # logits: (rows, V), raw
        def col(key):  # (rows,) per-request parameter
            return torch.tensor([p[key] for p in custom_param_list], dtype=torch.float32, device=logits.device)

        probs = torch.softmax(logits.float(), dim=-1)
        entropy = torch.special.entr(probs).sum(-1).clamp_min(1e-4)  # (rows,); entr(0) = 0 for masked tokens
        temp = col("t0") * col("base").pow(col("theta") / entropy)
        return logits * (col("temperature") / temp.clamp_min(1e-3)).to(logits.dtype).unsqueeze(-1)
