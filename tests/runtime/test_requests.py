"""The request lifecycle under hostile specs, denial and reuse: a slot never serves two live
groups, a denied request never releases what it did not hold, anything attach finds is safe."""

import random
from types import SimpleNamespace

import pytest

from sglang_esamp import ESampConfig
from sglang_esamp.core import GroupStats
from sglang_esamp.runtime.params import CUSTOM_KEY
from sglang_esamp.runtime.requests import RequestTracker


def make_req(rid, custom):
    sp = SimpleNamespace(custom_params=custom)
    return SimpleNamespace(rid=rid, sampling_params=sp, origin_input_ids=[1, 2, 3], esamp=None)


def esamp_req(rid, group, explore=0.5):
    return make_req(rid, {CUSTOM_KEY: {"explore": explore, "group": group}})


def tracker(max_groups=1, **cfg):
    opened = []
    t = RequestTracker(ESampConfig(max_groups=max_groups, group_ttl=60.0, **cfg), "cpu", opened.append)
    return t, opened


def check_live_slots(t, live):
    """Every running request with a slot uses its own group's current slot; no slot serves two groups."""
    t.table.check()
    owner = {}
    for req in live:
        state = req.esamp
        if state is None or state.slot is None:
            continue
        assert t.table.slot_of(state.key) == state.slot, (req.rid, state)
        assert owner.setdefault(state.slot, state.key) == state.key, f"slot {state.slot} serves two live groups"


def test_a_denied_request_releases_nothing():
    """A(x) holds the slot, B(y) is denied, A ends, C(y) takes the slot, B ends: C keeps its
    group's slot and a new group D(z) cannot evict it (the bug: B's release dropped C's hold)."""
    t, _ = tracker(max_groups=1)
    a, b = esamp_req("A", "g:x"), esamp_req("B", "g:y")
    t.attach(a)
    t.attach(b)
    assert a.esamp.slot == 0 and b.esamp.slot is None and b.esamp.denied and t.table.denied == 1
    t.release(a)
    c = esamp_req("C", "g:y")
    t.attach(c)
    assert c.esamp.slot == 0
    t.release(b)
    d = esamp_req("D", "g:z")
    t.attach(d)
    assert d.esamp.slot is None and t.table.slot_of("g:y") == 0  # C still holds its group's slot
    check_live_slots(t, [c, d])


def test_a_denied_request_gets_the_next_free_slot():
    t, opened = tracker(max_groups=1)
    a, b = esamp_req("A", "g:x"), esamp_req("B", "g:y")
    t.attach(a)
    t.attach(b)
    t.retry(b.esamp)
    assert b.esamp.slot is None and t.table.denied == 1  # still busy; a retry is not a new denial
    t.release(a)
    t.retry(b.esamp)
    assert b.esamp.slot == 0 and b.esamp.denied and opened == [0, 0]  # a fresh distiller for y
    check_live_slots(t, [b])


@pytest.mark.parametrize(
    "custom",
    [
        {CUSTOM_KEY: "x"},
        {CUSTOM_KEY: {"explore": 1e300, "group": "g:a"}},
        {CUSTOM_KEY: {"explore": float("nan"), "group": "g:a"}},
        {CUSTOM_KEY: {"explore": True, "group": "g:a"}},
        {CUSTOM_KEY: {"explore": 0.5, "group": 5}},
        {CUSTOM_KEY: {"explore": 0.5, "group": "p:someone-elses-prompt"}},
        {CUSTOM_KEY: {"explore": 0.5, "group": "g:" + "x" * 5000}},
        {CUSTOM_KEY: {"explore": 0.5, "group": "g:a", "extra": 1}},
        {CUSTOM_KEY: ["explore", 0.5]},
        "not a dict",
    ],
)
def test_attach_tolerates_anything_and_leaves_the_request_plain(custom):
    t, opened = tracker(max_groups=2)
    req = make_req("r", custom)
    t.attach(req)
    assert req.esamp is None and opened == [] and not t.table.entries
    assert t.rejected == (1 if isinstance(custom, dict) else 0)


def test_random_traffic_keeps_the_table_consistent():
    rng = random.Random(0)
    t, _ = tracker(max_groups=3, group_by="request")
    live, n = [], 0
    for _ in range(2000):
        op = rng.random()
        if op < 0.4 or not live:
            n += 1
            req = esamp_req(str(n), rng.choice(["g:a", "g:b", "g:c", "g:d", "g:e", f"r:{n}"]))
            t.attach(req)
            live.append(req)
        elif op < 0.8:
            t.release(live.pop(rng.randrange(len(live))))
        else:
            for req in live:
                t.retry(req.esamp)
        check_live_slots(t, live)
    for req in live:
        t.release(req)
    assert t.table.live == 0


@pytest.mark.parametrize("rows", [1, 4])
def test_a_reused_novelty_row_carries_nothing_of_its_last_request(monkeypatch, rows):
    """The overlap scheduler samples step k + 1 before it processes step k's outputs: a request
    that finished at step k still has a row in step k + 1, whose novelty lands after the request
    was released and its row handed to the next request. That row must report the next
    request's own novelty (with one row in the table, the same row is reused)."""
    import torch

    from sglang_esamp.core import BatchLayout
    from sglang_esamp.runtime import requests as requests_mod

    monkeypatch.setattr(requests_mod, "MAX_TRACKED_REQUESTS", rows)
    t, _ = tracker(max_groups=2)
    old, new = esamp_req("old", "g:a"), esamp_req("new", "g:b")
    t.attach(old)
    layout = BatchLayout.from_slots([old.esamp.slot])
    h, far = torch.zeros(1, 4), torch.full((1, 4), 5.0)  # novelty 10 for the old request's rows
    t.record_novelty([old.esamp], layout, h, far)  # step k
    t.release(old)  # step k's outputs: done
    t.attach(new)
    t.record_novelty([old.esamp], layout, h, far)  # step k + 1, sampled before the release
    t.record_novelty([new.esamp], BatchLayout.from_slots([new.esamp.slot]), h, torch.ones(1, 4))  # novelty 2
    assert t.metadata(new.esamp, GroupStats(2))["novelty"] == pytest.approx(2.0)


def test_a_finished_requests_metadata_takes_two_host_reads(monkeypatch):
    """After the overlap barrier every host read of the device waits: the metadata reads the
    slot's counters in one and the request's novelty in another, not one per number."""
    import torch

    from sglang_esamp.core import BatchLayout

    t, _ = tracker(max_groups=2)
    req = esamp_req("a", "g:a")
    t.attach(req)
    t.record_novelty([req.esamp], BatchLayout.from_slots([req.esamp.slot]), torch.zeros(1, 4), torch.ones(1, 4))
    reads = []
    for name in ("tolist", "item", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name: reads.append(_name) or _real(self, *a))
    meta = t.metadata(req.esamp, GroupStats(2))
    assert len(reads) <= 2, reads
    assert meta["novelty"] == pytest.approx(2.0) and meta["steps"] == 0
