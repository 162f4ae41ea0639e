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


@pytest.mark.parametrize("mode", ["probability", "logit"])
def test_the_plausible_path_caps_from_the_changed_tokens_alone(mode):
    """``StopCap.plausible`` sees only the untilted rows and the K changed values. Its stop
    logits, written over the tilted row, must give what the cap's definition gives on the whole
    tilted row, checked in float64: rows where a stop id is among the changed tokens and
    gains, where the stops sit outside them and gain from the others' loss, and where they lose."""
    torch.manual_seed(5)
    stop, n, v, k = [2, 7], 6, 16, 4
    x = torch.randn(n, v)
    x[0, 2] = x[1, 7] = 4.0  # a stop id among the K likeliest tokens of rows 0 and 1
    x[3, 7], x[3, 2] = 3.5, 3.4  # both in row 3's
    x[2, stop] = -3.0  # neither in row 2's
    temp = torch.tensor([1.0, 0.6, 1.0, 1.4, 1.0, 0.8])
    t = temp[:, None]
    before, idx = x.topk(k, -1)
    move = torch.randn(n, k) * 1.5
    move[0] = torch.tensor([2.0, -1.0, -1.0, -1.0])  # row 0: its stop (the top) gains
    move[1] = torch.tensor([-2.0, 1.0, 1.0, 1.0])  # row 1: its stop loses, the rest of the set gains
    move[3] = torch.tensor([1.0, 1.5, -1.0, -1.0])  # row 3: both stops gain
    after = before / t + move
    after = (after - after.logsumexp(-1, keepdim=True) + (before / t).logsumexp(-1, keepdim=True)) * t  # the set's total kept
    tilted = x.clone().scatter_(1, idx, after)
    stops = StopCap(stop, mode, "cpu").plausible(x, idx, before, after, temp)
    out = tilted.clone()
    out[:, stop] = stops
    p_before, p_tilted, p_out = (stop_prob(y.double(), stop, temp.double()) for y in (x, tilted, out))
    lse = [(y.double() / t).logsumexp(-1) for y in (x, tilted)]
    torch.testing.assert_close(lse[1], lse[0])  # the row's total is kept, as the plausible form keeps it
    assert p_tilted[0] > p_before[0] * 1.05 and p_tilted[3] > p_before[3] * 1.05  # the cases the test is for
    assert p_tilted[1] < p_before[1] and ((idx[2] != 2) & (idx[2] != 7)).all()
    others = torch.ones(v, dtype=torch.bool)
    others[stop] = False
    assert torch.equal(out[:, others], tilted[:, others])
    over = p_tilted > p_before
    assert torch.equal(out[~over], tilted[~over])  # within budget: nothing moves
    if mode == "probability":
        torch.testing.assert_close(p_out, torch.minimum(p_before, p_tilted), rtol=1e-5, atol=1e-7)
        drop = tilted[:, stop] - out[:, stop]
        torch.testing.assert_close(drop[:, 0], drop[:, 1])
    else:
        assert (odds(out.double(), stop, temp.double()) <= odds(x.double(), stop, temp.double()) + 1e-5).all()
        assert (p_out <= p_before + 1e-6).all()


def test_hold_keeps_the_untilted_stop_probability_up_or_down(rows):
    """``hold``: whichever way the tilt moved the stops' total, it is the untilted one after,
    in float64, with one common shift and every other token untouched."""
    stop, before, tilted, temp = rows
    out = StopCap(stop, "hold", "cpu")(tilted.clone(), before, temp)
    p_before, p_tilted, p_out = (stop_prob(x.double(), stop, temp.double()) for x in (before, tilted, out))
    assert (p_tilted[:3] > p_before[:3] * 1.05).all() and p_tilted[3] < p_before[3] * 0.95  # both ways
    torch.testing.assert_close(p_out, p_before, rtol=1e-5, atol=1e-7)
    shift = out[:, stop] - tilted[:, stop]
    torch.testing.assert_close(shift[:, 0], shift[:, 1])
    assert shift[3, 0] > 0 and (shift[:3, 0] < 0).all()
    others = torch.ones(16, dtype=torch.bool)
    others[stop] = False
    assert torch.equal(out[:, others], tilted[:, others])


def test_hold_on_the_plausible_path_matches_the_whole_row():
    """The plausible path's ``hold``, from the K changed values alone, against the untilted
    stop probability in float64, on rows where the stops gain and where they lose."""
    torch.manual_seed(11)
    stop, n, v, k = [2, 7], 5, 16, 4
    x = torch.randn(n, v)
    x[0, 2] = x[1, 7] = 4.0  # a stop id among the changed tokens: it gains in row 0, loses in row 1
    temp = torch.tensor([1.0, 0.7, 1.3, 1.0, 1.0])
    t = temp[:, None]
    before, idx = x.topk(k, -1)
    move = torch.randn(n, k) * 1.5
    move[0], move[1] = torch.tensor([2.0, -1.0, -1.0, -1.0]), torch.tensor([-2.0, 1.0, 1.0, 1.0])
    after = before / t + move
    after = (after - after.logsumexp(-1, keepdim=True) + (before / t).logsumexp(-1, keepdim=True)) * t
    tilted = x.clone().scatter_(1, idx, after)
    out = tilted.clone()
    out[:, stop] = StopCap(stop, "hold", "cpu").plausible(x, idx, before, after, temp)
    p_before, p_tilted, p_out = (stop_prob(y.double(), stop, temp.double()) for y in (x, tilted, out))
    assert (p_tilted > p_before * 1.02).any() and (p_tilted < p_before * 0.98).any()
    torch.testing.assert_close(p_out, p_before, rtol=1e-5, atol=1e-7)
