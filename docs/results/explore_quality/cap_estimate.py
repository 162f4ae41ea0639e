"""The tilt part of ``bench --estimate`` at 32 x 16 rows, three ways: the plausible tilt alone
(what the estimate counted before the cap was in it), the tilt and stop cap as the sampler's
hook ran them before (a copy of the rows, the cap's reduction over the untilted and over the
tilted rows, the rows copied back), and as it runs them now (``estimate.tilt``). Counted on
meta tensors with the estimate's own counter; no GPU.

    python docs/results/explore_quality/cap_estimate.py
"""

import torch

from sglang_esamp.core import Head, StopCap, VocabMoments, tilt_plausible
from sglang_esamp.core.config import ESampConfig
from sglang_esamp.tools.estimate import META, count, tilt

ROWS = 32 * 16
SHAPES = {"llama-2-7b": (4096, 32000), "qwen2.5-7b": (3584, 152064)}


def rows_for(name: str, hidden: int, vocab: int, cfg: ESampConfig) -> list[str]:
    h = torch.empty(ROWS, hidden, device=META, dtype=torch.bfloat16)
    head = Head(torch.empty(vocab, hidden, device=META, dtype=torch.bfloat16))
    moments = VocabMoments(torch.empty(hidden, hidden, device=META), torch.empty(hidden, device=META), 0.0,
                           torch.empty(hidden, device=META), 0.0, 1.0)
    logits = torch.empty(ROWS, vocab, device=META)
    beta, temps = torch.empty(ROWS, device=META), torch.ones(ROWS, device=META)
    cap = StopCap([0], cfg.stop_cap, META)

    def alone():
        tilt_plausible(logits, h, h, head, beta, cfg.tilt, temps, cfg.tail_floor, moments)

    def whole_rows():
        ref = cap.reference(logits, temps)
        tilted = tilt_plausible(logits.clone(), h, h, head, beta, cfg.tilt, temps, cfg.tail_floor, moments)
        logits.copy_(cap.apply(tilted, ref, temps))

    def changed_tokens():
        tilt(logits, h, h, head, beta, cfg, moments, cap)

    out = []
    for label, fn in (("tilt alone (the earlier estimate)", alone), ("tilt and cap, whole rows (the earlier hook)", whole_rows),
                      ("tilt and cap, changed tokens (now)", changed_tokens)):
        c = count(fn)
        out.append(f"| {name} | {label} | {c['bytes'] / 1e9:.2f} | {c['launches']} | {c['seconds'] * 1e3:.2f} |")
    return out


def main() -> None:
    print("| model | path | GB | kernels | H100 roofline ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, (hidden, vocab) in SHAPES.items():
        print("\n".join(rows_for(name, hidden, vocab, ESampConfig())))


if __name__ == "__main__":
    main()
