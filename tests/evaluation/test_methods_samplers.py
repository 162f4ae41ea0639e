"""Method specs and the FIRE / EDT logit processors, on hand-made logits."""

import math

import pytest
import torch

from sglang_esamp.evaluation.methods import parse_methods
from sglang_esamp.evaluation.samplers import EntropyTemperature, FirstTokenTemperature


def test_parse_methods_expands_the_per_beta_methods():
    methods = parse_methods("vanilla,esamp,min_p,matched,esamp_iid,stratified", [0.25, 1.0])
    assert [m.name for m in methods] == ["vanilla", "esamp@0.25", "esamp@1", "min_p", "matched@0.25", "matched@1",
                                         "esamp_iid@0.25", "esamp_iid@1", "stratified"]
    by = {m.name: m for m in methods}
    assert by["esamp@0.25"].sampling == {"temperature": 1.0, "explore": 0.25} and by["esamp@1"].uses_esamp
    assert by["esamp_iid@1"].sampling == {"temperature": 1.0, "explore": 1.0, "stratified": False}
    assert by["matched@0.25"].sampling == {"temperature": 0.8} and by["matched@1"].sampling == {"temperature": 0.5}  # 1 / (1 + beta)
    assert by["stratified"].sampling == {"temperature": 1.0, "stratified": True} and not by["stratified"].uses_esamp
    assert by["min_p"].sampling["min_p"] == 0.1 and not by["vanilla"].uses_esamp
    assert "custom_logit_processor" in parse_methods("fire", [])[0].extra
    assert [m.name for m in parse_methods("esamp", [0.5])] == ["esamp@0.5"]  # matched only when asked


def test_min_p_floor_reaches_every_method():
    methods = {m.name: m for m in parse_methods("vanilla,esamp,min_p,top_p,matched", [0.25], min_p=0.05)}
    assert methods["vanilla"].sampling == {"temperature": 1.0, "min_p": 0.05}
    assert methods["esamp@0.25"].sampling == {"temperature": 1.0, "explore": 0.25, "min_p": 0.05}
    assert methods["matched@0.25"].sampling == {"temperature": 0.8, "min_p": 0.05}
    assert methods["min_p"].sampling["min_p"] == 0.1 and methods["top_p"].sampling["top_p"] == 0.95
    with pytest.raises(ValueError, match="--min-p must be in"):
        parse_methods("vanilla", [], min_p=1.0)


def test_the_papers_word_problem_setting_reaches_every_method():
    """--temperature 0.8 --top-p 0.95: T 0.8 wherever the table says 1, each top-p at most 0.95."""
    methods = {m.name: m for m in parse_methods("vanilla,top_p,min_p,fire,edt,stratified,esamp,esamp_iid,matched", [0.25],
                                               temperature=0.8, top_p=0.95)}
    sampling = {name: m.sampling for name, m in methods.items()}
    assert sampling["vanilla"] == {"temperature": 0.8, "top_p": 0.95}
    assert sampling["top_p"] == {"temperature": 0.8, "top_p": 0.95}
    assert sampling["min_p"] == {"temperature": 0.8, "min_p": 0.1, "top_p": 0.95}
    assert sampling["stratified"] == {"temperature": 0.8, "stratified": True, "top_p": 0.95}
    assert sampling["esamp@0.25"] == {"temperature": 0.8, "explore": 0.25, "top_p": 0.95}
    assert sampling["esamp_iid@0.25"] == {"temperature": 0.8, "explore": 0.25, "stratified": False, "top_p": 0.95}
    assert sampling["matched@0.25"] == {"temperature": 0.64, "top_p": 0.95}  # 0.8 / 1.25
    # FIRE: later tokens at 0.8, the first still at 3 (its processor scales by 0.8 / 3, the sampler divides by 0.8)
    assert sampling["fire"] == {"temperature": 0.8, "top_p": 0.95, "custom_params": {"temperature": 0.8, "first_temperature": 3.0}}
    assert sampling["edt"]["custom_params"] == {"temperature": 0.8, "t0": 0.8, "base": 0.8, "theta": 1.0}
    assert parse_methods("top_p", [], top_p=0.99)[0].sampling["top_p"] == 0.95  # a ceiling, not a value
    for bad, message in (({"temperature": 0.0}, "--temperature must be in"), ({"top_p": 1.5}, "--top-p must be in")):
        with pytest.raises(ValueError, match=message):
            parse_methods("vanilla", [], **bad)


@pytest.mark.parametrize("spec, explore, message", [
    ("vanilla,bogus", [0.25], "unknown method 'bogus'"),
    ("esamp", [], "needs at least one --explore"),
    ("matched", [], "needs at least one --explore"),
    ("esamp", [0.0], "must be > 0"),
    ("vanilla,vanilla", [], "repeats"),
])
def test_bad_method_specs(spec, explore, message):
    with pytest.raises(ValueError, match=message):
        parse_methods(spec, explore)


class _Req:
    def __init__(self, generated: int):
        self.output_ids = [0] * generated


def test_fire_heats_only_the_first_token():
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    params = [{"temperature": 0.5, "first_temperature": 2.0, "__req__": _Req(0)},
              {"temperature": 0.5, "first_temperature": 2.0, "__req__": _Req(3)}]
    out = FirstTokenTemperature()(logits.clone(), params)
    # the sampler divides by 0.5 next: row 0 ends at logits / 2.0, row 1 at logits / 0.5
    assert torch.allclose(out[0] / 0.5, logits[0] / 2.0) and torch.equal(out[1], logits[1])


def test_edt_temperature_follows_entropy():
    uniform = torch.zeros(1, 8)  # entropy ln 8
    peaked = torch.tensor([[6.0, 0, 0, 0, 0, 0, 0, float("-inf")]])  # masked token: entr(0) = 0, no NaN
    p = {"temperature": 1.0, "t0": 1.0, "base": 0.8, "theta": 1.0}
    out = EntropyTemperature()(torch.cat([uniform, peaked]), [p, p])
    assert torch.isfinite(out[:, :7]).all()
    t_uniform = 0.8 ** (1.0 / math.log(8))
    assert torch.allclose(out[0], uniform[0] / t_uniform)  # all zeros stay zeros; scale checked below
    probs = torch.softmax(peaked[0], -1)
    h = float(torch.special.entr(probs).sum())
    assert out[1, 0].item() == pytest.approx(6.0 / (0.8 ** (1.0 / h)), rel=1e-4)
    assert 0.8 ** (1.0 / h) < t_uniform  # the confident row is cooled more
