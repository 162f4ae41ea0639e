"""Both stop caps: exact in log-probability space, blind to per-row logit offsets."""

import pytest
import torch

from sglang_esamp.core import StopCap


def stop_prob(logits, stop, temp):
    scaled = logits / temp.view(-1, 1)
    return (torch.logsumexp(scaled[:, stop], -1) - torch.logsumexp(scaled, -1)).exp()


def odds(logits, stop, temp):
    """(n, S) each stop id's log-odds against the non-stop tokens."""
    scaled = logits / temp.view(-1, 1)
    rest = scaled.clone()
    rest[:, stop] = float("-inf")
    return scaled[:, stop] - torch.logsumexp(rest, -1, keepdim=True)


@pytest.fixture()
def rows():
    torch.manual_seed(3)
    stop = [2, 7]
    before = torch.randn(4, 16)
    temp = torch.tensor([1.0, 0.5, 2.0, 1.0])
    tilted = before - torch.rand(4, 16) * 3  # every token lowered: the stops' share grows even with logits kept
    tilted[:, stop] = before[:, stop]
    tilted[3] = before[3]
    tilted[3, stop] -= 1.0  # this row's stop probability went down: no cap
    return stop, before, tilted, temp


@pytest.mark.parametrize("mode", ["probability", "logit"])
def test_a_cap_restores_the_untilted_stop_probability_and_moves_only_stops(rows, mode):
    stop, before, tilted, temp = rows
    out = StopCap(stop, mode, "cpu")(tilted.clone(), before, temp)
    p_before, p_tilted, p_out = (stop_prob(x, stop, temp) for x in (before, tilted, out))
    assert (p_tilted[:3] > p_before[:3] * 1.05).all()  # the case the cap is for
    assert (p_out <= p_before + 1e-6).all()
    assert torch.equal(out[3], tilted[3])
    others = torch.ones(16, dtype=torch.bool)
    others[stop] = False
    assert torch.equal(out[:, others], tilted[:, others])
    if mode == "probability":  # one common drop: the stops keep their ratio
        torch.testing.assert_close(p_out[:3], p_before[:3])
        drop = tilted[:3, stop] - out[:3, stop]
        torch.testing.assert_close(drop[:, 0], drop[:, 1])
    else:  # no stop id gains odds against the rest
        assert (odds(out, stop, temp) <= odds(before, stop, temp) + 1e-5).all()


@pytest.mark.parametrize("mode", ["probability", "logit"])
def test_a_per_row_offset_changes_nothing(rows, mode):
    """A distiller whose logits are the model's minus 5 leaves the distribution unchanged;
    so must the cap (comparing raw logits cut this row's stop probability from 0.078 to 0.007)."""
    stop = [0]
    before = torch.tensor([[0.0, 2.0, 1.0, 0.5]])
    beta = 0.5
    tilted = before + beta * 5.0  # (1 + beta) l - beta (l - 5)
    cap = StopCap(stop, mode, "cpu")
    out = cap(tilted.clone(), before, torch.ones(1))
    torch.testing.assert_close(torch.softmax(out, -1), torch.softmax(before, -1))
    shifted = cap(tilted.clone() - 40.0, before + 3.0, torch.ones(1))
    torch.testing.assert_close(torch.softmax(shifted, -1), torch.softmax(out, -1))


def test_the_budget_is_read_within_the_kept_set():
    stop = [0]
    before = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    keep = torch.tensor([[True, True, True, False, False]])
    tilted = torch.tensor([[1.0, 2.0, 1.5, float("-inf"), float("-inf")]])
    cap = StopCap(stop, "probability", "cpu")
    out = cap(tilted.clone(), before, torch.ones(1), keep)
    budget = torch.softmax(before.masked_fill(~keep, float("-inf")), -1)[0, 0]
    torch.testing.assert_close(torch.softmax(out, -1)[0, 0], budget)
    # no stop mass before (the stop outside the kept set), or only stops kept: unchanged
    no_stop = torch.tensor([[False, True, True, False, False]])
    for mode in ("probability", "logit"):
        cap = StopCap(stop, mode, "cpu")
        gone = tilted.masked_fill(~no_stop, float("-inf"))
        only = tilted.masked_fill(torch.arange(5) > 0, float("-inf"))
        assert torch.equal(cap(gone.clone(), before, torch.ones(1), no_stop), gone)
        assert torch.equal(cap(only.clone(), before, torch.ones(1)), only)


def test_no_stop_ids_no_cap():
    tilted = torch.randn(2, 5)
    assert StopCap([], "logit", "cpu")(tilted, tilted - 1, torch.ones(2)) is tilted
