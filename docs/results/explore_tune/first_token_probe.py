"""Probe: does a hotter first token, drawn only among the plausible tokens, make chat answers
say different things? FIRE draws the first token at temperature 3 over the whole vocabulary
and breaks chat's first words; this draws it at 3 only among the tokens with p >= 0.05 p_max
at the request's temperature (the plausible form's set), keeping their total probability
and every other token's. A custom logit processor, so it needs no change to the server.

    python docs/results/explore_tune/first_token_probe.py chat_hotfirst   # resumable

Methods (chat tuning split, 24 prompts, n = 10, 64 tokens): vanilla (T = 1), stratified,
stratified with the hot plausible first token, ESamp's defaults at explore 0.5, and ESamp
with the hot plausible first token.
"""

import sys
from pathlib import Path

from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor

from sglang_esamp.evaluation.harness import EvalConfig, run_eval
from sglang_esamp.evaluation.methods import Method
from sglang_esamp.evaluation.report import aggregate, write_report
from sglang_esamp.launch.server import server_url

FLOOR = 0.05  # the plausible form's default floor
FIRST_TEMPERATURE = 3.0  # FIRE's


class PlausibleFirstToken(CustomLogitProcessor):
    def __call__(self, logits, custom_param_list):
        import math  # the server unpickles this class without this module's globals

        import torch

        out = logits.clone()  # (rows, V) raw logits
        for i, p in enumerate(custom_param_list):
            req = p.get("__req__")
            if req is None or req.output_ids:
                continue
            t, hot = p["temperature"], p["first_temperature"]
            row = logits[i].float()
            inside = row >= row.max() + t * math.log(p["floor"])  # p >= floor * p_max at t
            y0 = torch.where(inside, row / t, float("-inf"))
            keep = torch.logsumexp(y0, -1) - torch.logsumexp(y0 / hot, -1)  # the set's total stays
            out[i] = torch.where(inside, (y0 / hot + keep) * t, row).to(logits.dtype)
        return out


def main(out: Path) -> None:
    hot = {"custom_logit_processor": PlausibleFirstToken.to_str()}
    params = {"temperature": 1.0, "first_temperature": FIRST_TEMPERATURE, "floor": FLOOR}
    methods = [
        Method("vanilla", {"temperature": 1.0}),
        Method("stratified", {"temperature": 1.0, "stratified": True}),
        Method("stratified+hotfirst", {"temperature": 1.0, "stratified": True, "custom_params": params}, hot),
        Method("esamp@0.5", {"temperature": 1.0, "explore": 0.5}),
        Method("esamp+hotfirst@0.5", {"temperature": 1.0, "explore": 0.5, "custom_params": params}, hot),
    ]
    cfg = EvalConfig("chat", "tune", 24, 10, methods, 64, 8, "")
    out.mkdir(parents=True, exist_ok=True)
    with server_url(None, ["--enable-esamp", "--enable-custom-logit-processor"]) as url:
        run_eval(url, cfg, out)
    write_report(out, aggregate(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
