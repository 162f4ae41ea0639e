"""Test-only probe: checks, inside a real server's scheduler, every tilted row of every step
against a float64 reference of the tilt's definition (sglang_esamp/core/tilt.py).

Every Python process whose ``PYTHONPATH`` starts with this folder imports it at start (the
``sitecustomize`` mechanism); with ``ESAMP_PROBE`` naming a file, it wraps the runtime's
tilt. For each tilted row it computes, from the model's own head weights in float64 and
independently of the package's code, what SGLang should sample from: the processed logits
``x`` plus beta times the direction t (paper or residual, the residual's fit by least squares
over the whole vocabulary), within the tokens the row's filters keep from ``x``, with the
bound on any token's gain and the stop cap. It appends one JSON line per row to the file: how far the logits SGLang then
samples from are from that reference, in log-probability, and the stop probabilities.
"""

import json
import os

import torch
from gain_oracle import capped64

PROBE = os.environ.get("ESAMP_PROBE")
MODEL = {}  # the served model, kept when the runtime is built


def head64(model, x: torch.Tensor, vocab: int) -> torch.Tensor:
    """The model's logits of states ``x`` in float64: its head weight and bias, then its
    logits processor's scale and softcap."""
    z = x.double() @ model.lm_head.weight[:vocab].double().T
    bias = getattr(model.lm_head, "bias", None)
    if bias is not None:
        z = z + bias[:vocab].double()
    processor = model.logits_processor
    if processor.logit_scale is not None:
        z = z * processor.logit_scale
    if processor.final_logit_softcapping:
        z = processor.final_logit_softcapping * torch.tanh(z / processor.final_logit_softcapping)
    return z


def keep_mask(x: torch.Tensor, temp: float, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """SGLang's top-k, top-p and min-p filters on one row, in float32 as SGLang's sampler
    computes them (the token that crosses top-p stays, as in SGLang)."""
    p = torch.softmax(x.float() / temp, -1)
    sp, order = p.sort(descending=True)
    rank = torch.arange(len(p))
    keep = rank < top_k
    keep &= (sp.cumsum(0) - sp) <= top_p
    keep &= sp >= min_p * sp[0]
    keep[0] = True
    return torch.zeros_like(keep).scatter_(0, order, keep)


def direction(lm: torch.Tensor, d: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "paper":
        return lm - d
    design = torch.stack([lm, torch.ones_like(lm)], -1)  # (V, 2)
    a, b = torch.linalg.lstsq(design, d.unsqueeze(-1)).solution.flatten()
    return a * lm + b - d


def capped(ref: torch.Tensor, x: torch.Tensor, stop: list[int], temp: float, mode: str) -> torch.Tensor:
    """The stop cap of ``mode`` on the tilted ``ref`` against the untilted ``x`` (masked alike)."""
    if not stop or not torch.isfinite(ref[[v for v in range(len(ref)) if v not in stop]]).any():
        return ref  # only stop ids left (a finished grammar): nothing to cap against
    others = torch.ones_like(ref, dtype=torch.bool)
    others[stop] = False
    rest = lambda v: torch.logsumexp(v[others] / temp, 0)  # noqa: E731
    out = ref.clone()
    if mode == "logit":
        out[stop] = torch.minimum(ref[stop], x[stop] + temp * (rest(ref) - rest(x)))
    else:
        budget = torch.logsumexp(x[stop] / temp, 0) - rest(x)
        odds = torch.logsumexp(ref[stop] / temp, 0) - rest(ref)
        if odds > budget or (mode == "hold" and torch.isfinite(odds) and torch.isfinite(budget)):
            out[stop] = ref[stop] - temp * (odds - budget)
    return out


def stop_prob(v: torch.Tensor, stop: list[int], temp: float) -> float:
    lp = torch.log_softmax(v / temp, -1)
    return float(torch.logsumexp(lp[stop], 0).exp()) if stop else 0.0


def check(pending, x_all: torch.Tensor, out_all: torch.Tensor) -> list[dict]:
    from sglang_esamp.runtime.plan import Form

    model, plan, info = MODEL["model"], pending.plan, pending.info
    vocab = x_all.shape[-1]
    stop, mode, cap_mode = MODEL["stop"], MODEL["cfg"].tilt, MODEL["cfg"].stop_cap
    records = []
    for i, form in enumerate(plan.forms):
        if form is Form.UNTILTED:
            continue
        r = plan.layout.row_list[i]
        beta = plan.betas[i]
        temp = max(float(info.temperatures.view(-1)[r]), 1e-6)
        x, got = x_all[r].double(), out_all[r].double()
        lm, d = head64(model, pending.h[r:r + 1], vocab)[0], head64(model, pending.h_hat[i:i + 1], vocab)[0]
        server_l = pending.probe_logits[r].double()  # the model's own, kept by the probe before SGLang's processing
        ref = x + beta * direction(lm, d, mode)
        gain_bound = False  # the bound on a token's gain changed this row
        stop_held = False  # a plausible stop id left out of the tilt (``hold``)
        if form is Form.PLAUSIBLE:  # the tilt within the 64 likeliest at p >= floor * p_max, their total kept
            p = torch.softmax(x / temp, -1)
            top = torch.zeros_like(p, dtype=torch.bool).scatter_(0, x.topk(min(64, vocab)).indices, True)
            plausible = top & (p >= MODEL["cfg"].tail_floor * p.max())
            if cap_mode == "hold":  # the stop ids stay out of the set, untilted
                stop_held = bool(plausible[stop].any())
                plausible[stop] = False
            shift = temp * (torch.logsumexp(x[plausible] / temp, 0) - torch.logsumexp(ref[plausible] / temp, 0))
            ref = torch.where(plausible, ref + shift, x)
            gain = MODEL["cfg"].tilt_max_gain
            if gain > 0 and plausible.any():  # no token above gain times its plain probability (tests/probe/gain_oracle.py)
                inside = x[plausible] / temp
                p_in = torch.softmax(inside, 0)
                gain_bound = bool((torch.softmax(ref[plausible] / temp, 0) > gain * p_in * (1 + 1e-6)).any())
                q = capped64(p_in, ref[plausible] / temp - inside, gain)
                ref = ref.clone()
                ref[plausible] = temp * (torch.log(q) + torch.logsumexp(inside, 0))
        if form is Form.CANDIDATES:
            if plan.floors[i] > 0:
                keep = keep_mask(x, temp, vocab, 1.0, plan.floors[i])
            else:
                keep = keep_mask(x, temp, int(info.top_ks[r]), float(info.top_ps[r]), float(info.min_ps[r]))
            ref, x_kept = ref.masked_fill(~keep, float("-inf")), x.masked_fill(~keep, float("-inf"))
        else:
            x_kept = x
        if form is Form.CANDIDATES and cap_mode == "hold" and stop:  # the stops untilted, the rest's total kept
            stop_held = bool(torch.isfinite(x_kept[stop]).any())
            others = torch.isfinite(x_kept)
            others[stop] = False
            if others.any():
                ref = ref.clone()
                ref[others] += temp * (torch.logsumexp(x_kept[others] / temp, 0) - torch.logsumexp(ref[others] / temp, 0))
            ref[stop] = x_kept[stop]
        held = form is not Form.DENSE and cap_mode == "hold"  # no cap: the stops were never tilted
        uncapped, ref = ref, ref if held else capped(ref, x_kept, stop, temp, cap_mode)
        lp_ref, lp_got = torch.log_softmax(ref / temp, -1), torch.log_softmax(got / temp, -1)
        finite = torch.isfinite(lp_ref)
        likely = finite & (lp_ref > -15)
        if not likely.any():
            raise AssertionError(f"row {r} ({form.value}): no finite reference; temp {temp}, x finite {int(torch.isfinite(x).sum())}, "
                                 f"ref nan {int(ref.isnan().sum())}, lm nan {int(lm.isnan().sum())}, d nan {int(d.isnan().sum())}")
        records.append({
            "form": form.value, "beta": beta, "mode": mode, "cap": cap_mode, "temperature": temp,
            "greedy": plan.greedy[i], "kept": int(finite.sum()),
            "same_support": bool(torch.equal(finite, torch.isfinite(lp_got))),
            "max_logprob_err": float((lp_ref - lp_got)[likely].abs().max()),
            "argmax_same": int(ref.argmax()) == int(got.argmax()),
            "head_err": float((server_l - lm).abs().max()),  # the reference head against the server's own logits
            "processed": float((x - server_l)[torch.isfinite(x)].abs().max()),  # penalties and bias at work
            "masked": int((~torch.isfinite(x)).sum()),  # grammar
            "tilt_size": float((lp_ref - torch.log_softmax(x_kept / temp, -1))[likely].abs().max()),
            "stop_before": stop_prob(x_kept, stop, temp), "stop_after": stop_prob(got, stop, temp),
            "cap_bound": stop_prob(uncapped, stop, temp) > stop_prob(ref, stop, temp) + 1e-9, "gain_bound": gain_bound,
            "stop_held": stop_held,
        })
    return records


def patch(module) -> None:
    runtime_cls = module.ESampRuntime
    from_runner = runtime_cls.from_runner.__func__

    def probing_from_runner(cls, runner, cfg):
        MODEL.update(model=runner.model, cfg=cfg, stop=sorted(getattr(runner.model_config, "hf_eos_token_id", None) or []))
        return from_runner(cls, runner, cfg)

    runtime_cls.from_runner = classmethod(probing_from_runner)
    tilter_cls = module.Tilter
    after, capture = tilter_cls.after_processing, tilter_cls.capture

    def probing_capture(self, plan, h, h_hat, logits, *args):
        pending = capture(self, plan, h, h_hat, logits, *args)
        if pending is not None:
            pending.probe_logits = logits.clone()  # (rows, V), before SGLang's processing
        return pending

    tilter_cls.capture = probing_capture

    def probing_after(self, pending, logits):
        x = logits.clone()
        after(self, pending, logits)
        with open(PROBE, "a") as f:
            for record in check(pending, x, logits):
                f.write(json.dumps(record) + "\n")

    tilter_cls.after_processing = probing_after


if PROBE:
    import wrapt

    wrapt.register_post_import_hook(patch, "sglang_esamp.runtime.runtime")
