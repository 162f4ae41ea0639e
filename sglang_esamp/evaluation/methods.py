"""Sampling methods compared by ``sglang-esamp eval``, each a set of request fields.

| name | sampling |
| --- | --- |
| ``vanilla`` | temperature 1 |
| ``top_p`` | temperature 0.8, top-p 0.95 |
| ``min_p`` | temperature 1, min-p 0.1 |
| ``fire`` | temperature 1, first token at 3.0 and top-p 0.95 on every token (FIRE) |
| ``edt`` | entropy-dependent temperature, t0 1, base 0.8, theta 1 (EDT) |
| ``stratified`` | temperature 1, stratified codes across the n samples, no tilt |
| ``esamp@B`` | temperature 1, ``explore`` B (one group per problem: its n samples), the server's defaults (stratified for n > 1) |
| ``esamp_iid@B`` | as ``esamp@B`` with ``stratified`` off: the samples draw independently |
| ``matched@B`` | temperature 1 / (1 + B), the temperature ESamp's tilt alone would mimic |

``esamp``, ``esamp_iid`` and ``matched`` in a method list expand to one method per
``--explore`` value. FIRE and EDT need a server started with
``--enable-custom-logit-processor``. ``--min-p P`` gives every method a min-p of at least P
(the names stay; the config and report record it): on a small model, T = 1 without a floor
rarely solves a word problem, and this is the setting of the reference prototype's SVAMP run.
``--temperature T`` puts T where the table says temperature 1 (FIRE's later tokens and EDT's
``t0`` included; ``matched@B`` at T / (1 + B); ``top_p`` keeps its 0.8), and ``--top-p P``
gives every method a top-p of at most P: ``--temperature 0.8 --top-p 0.95`` is the paper's
setting for word problems, for every method alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_METHODS = ("vanilla", "top_p", "min_p", "fire", "edt", "stratified", "esamp", "esamp_iid", "matched")
PER_BETA = ("esamp", "esamp_iid", "matched")


@dataclass(frozen=True)
class Method:
    name: str
    sampling: dict  # sampling_params fields
    extra: dict = field(default_factory=dict)  # top-level /generate fields (custom_logit_processor)

    @property
    def uses_esamp(self) -> bool:
        return "explore" in self.sampling


def _one(name: str, t: float) -> Method:
    """Method ``name`` with base temperature ``t`` (1 in the table)."""
    if name == "vanilla":
        return Method(name, {"temperature": t})
    if name == "top_p":
        return Method(name, {"temperature": 0.8, "top_p": 0.95})
    if name == "min_p":
        return Method(name, {"temperature": t, "min_p": 0.1})
    if name == "stratified":
        return Method(name, {"temperature": t, "stratified": True})
    if name in ("fire", "edt"):
        from .samplers import EntropyTemperature, FirstTokenTemperature  # imports SGLang's runtime
    if name == "fire":
        return Method(name, {"temperature": t, "top_p": 0.95, "custom_params": {"temperature": t, "first_temperature": 3.0}},
                      {"custom_logit_processor": FirstTokenTemperature.to_str()})
    if name == "edt":
        return Method(name, {"temperature": t, "custom_params": {"temperature": t, "t0": t, "base": 0.8, "theta": 1.0}},
                      {"custom_logit_processor": EntropyTemperature.to_str()})
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(BASE_METHODS)}")


def _per_beta(name: str, beta: float, t: float) -> Method:
    if name == "esamp":
        return Method(f"esamp@{beta:g}", {"temperature": t, "explore": beta})
    if name == "esamp_iid":
        return Method(f"esamp_iid@{beta:g}", {"temperature": t, "explore": beta, "stratified": False})
    return Method(f"matched@{beta:g}", {"temperature": round(t / (1.0 + beta), 6)})


def parse_methods(spec: str, explore: list[float], min_p: float = 0.0, temperature: float = 1.0,
                  top_p: float = 1.0) -> list[Method]:
    """``"vanilla,esamp,matched"`` with explore [0.25] -> vanilla, esamp@0.25, matched@0.25."""
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"--min-p must be in [0, 1); got {min_p}")
    if not 0.0 < temperature <= 2.0:
        raise ValueError(f"--temperature must be in (0, 2]; got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"--top-p must be in (0, 1]; got {top_p}")
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("--methods is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"--methods repeats a method: {spec!r}")
    out = []
    for name in names:
        if name not in PER_BETA:
            out.append(_one(name, temperature))
            continue
        if not explore:
            raise ValueError(f"method {name!r} needs at least one --explore value")
        for beta in explore:
            if not 0 < beta:
                raise ValueError(f"--explore values must be > 0; got {beta}")
            out.append(_per_beta(name, beta, temperature))
    if min_p > 0:
        out = [Method(m.name, {**m.sampling, "min_p": max(m.sampling.get("min_p", 0.0), min_p)}, m.extra) for m in out]
    if top_p < 1:
        out = [Method(m.name, {**m.sampling, "top_p": min(m.sampling.get("top_p", 1.0), top_p)}, m.extra) for m in out]
    return out
