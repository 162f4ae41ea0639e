"""ESampRuntime's per-step logic on plain tensors, driven through the same calls as the hooks
make (SGLang's inputs stood in by small objects; the real server runs it in
tests/runtime/test_esamp_server.py)."""

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from sglang_esamp import ESampConfig
from sglang_esamp.core import Head
from sglang_esamp.runtime import requests as requests_mod
from sglang_esamp.runtime.params import CUSTOM_KEY
from sglang_esamp.runtime.runtime import ESampRuntime
from sglang_esamp.runtime.step import Step

D, V = 8, 32
PROCESSOR = SimpleNamespace(logit_scale=None, final_logit_softcapping=None)  # the model's LogitsProcessor


@dataclass
class Info:  # the fields of SGLang's SamplingBatchInfo that the tilt reads
    temperatures: torch.Tensor
    top_ks: torch.Tensor
    top_ps: torch.Tensor
    min_ps: torch.Tensor
    grammar_mask: object = None


def make_req(rid, explore=None, group=None, top_k=V, top_p=1.0, min_p=0.0):
    custom = {CUSTOM_KEY: {"explore": explore, "group": group}} if explore is not None else None
    sp = SimpleNamespace(custom_params=custom, top_k=top_k, top_p=top_p, min_p=min_p)
    return SimpleNamespace(rid=rid, sampling_params=sp, origin_input_ids=[1, 2, 3], customized_info=None)


def make_runtime(stop_ids=None, **cfg):
    torch.manual_seed(0)
    cfg = ESampConfig(distiller="mlp", max_groups=4, intermediate=8, trainer="inline", **cfg)
    return ESampRuntime(cfg, D, Head(torch.randn(V, D)), None, "cpu", stop_ids, processor=PROCESSOR)


def head(rt):
    return rt.tilter.head.weight


def metadata(extend: bool):
    """The LogitsMetadata fields the capture reads."""
    return SimpleNamespace(capture_hidden_mode=SimpleNamespace(is_last=lambda: True),
                           forward_mode=SimpleNamespace(is_extend=lambda: extend), extend_return_logprob=False)


def make_batch(reqs, decode=True, info=None, **fields):
    """A ForwardBatch after init_new: its Step rides on it as the hook puts it there."""
    return SimpleNamespace(sampling_info=info, forward_mode=SimpleNamespace(is_decode=lambda: decode), esamp=Step.of(reqs), **fields)


def run_step(rt, reqs, decode=True, bias=None, hidden=None):
    """One batch, as SGLang runs it: the forward (its hidden-state hook), then ``sample``."""
    rows = len(reqs)
    hidden = torch.randn(rows, 2 * D) if hidden is None else hidden
    h = hidden[:, D:].clone()  # the LM head's input
    logits = h @ head(rt).T
    info = Info(torch.ones(rows, 1), torch.tensor([r.sampling_params.top_k for r in reqs]),
                torch.tensor([r.sampling_params.top_p for r in reqs]), torch.tensor([r.sampling_params.min_p for r in reqs]))
    batch = make_batch(reqs, decode, info)
    with rt.forward(batch):
        stored = rt.store_hidden_states(PROCESSOR, hidden[:, :D].clone(), h, None, h, None, metadata(extend=not decode))
    assert torch.equal(stored, hidden)  # layer output | LM-head input
    out = SimpleNamespace(hidden_states=hidden, next_token_logits=logits.clone())
    seen = {}

    def sample(lo, fb):  # SGLang's sample: preprocessing (where the tilt hooks in), then sampling
        if bias is not None:  # SGLang's logit_bias, applied in preprocessing before the tilt
            lo.next_token_logits[:, bias] += 100.0
        rt.apply_tilt(lo)
        seen["logits"], seen["info"] = lo.next_token_logits.clone(), fb.sampling_info
        return lo.next_token_logits.argmax(-1)

    rt.sample(sample, out, batch)
    step = batch.esamp
    assert batch.sampling_info is info and rt.active is None  # restored after sampling
    assert step is None or (step.plan is None and step.tilt_pending is None)  # used once
    return logits, seen


def test_only_explore_rows_are_tilted_and_trained():
    rt = make_runtime()
    reqs = [make_req("a", 0.5, "g:x"), make_req("b"), make_req("c", 0.0, "g:y")]
    for r in reqs:
        rt.attach(r)
    logits, seen = run_step(rt, reqs)
    assert not torch.equal(seen["logits"][0], logits[0])
    assert torch.equal(seen["logits"][1], logits[1]) and torch.equal(seen["logits"][2], logits[2])
    assert rt.trainer.submitted == 1
    assert rt.stats.snapshot(reqs[0].esamp.slot)["steps"] == 1 and rt.stats.snapshot(reqs[2].esamp.slot)["steps"] == 1
    logits, seen = run_step(rt, reqs, decode=False)  # prefill rows are tilted but not trained on
    assert not torch.equal(seen["logits"][0], logits[0]) and torch.equal(seen["logits"][1:], logits[1:])
    assert rt.trainer.submitted == 1


def test_filtered_rows_tilt_candidates_then_sample_unfiltered():
    rt = make_runtime()
    reqs = [make_req("a", 1.0, "g:x", top_k=3), make_req("b", 1.0, "g:x")]
    for r in reqs:
        rt.attach(r)
    _, seen = run_step(rt, reqs)
    assert int(torch.isfinite(seen["logits"][0]).sum()) == 3  # only the top-3 candidates survive
    assert torch.isfinite(seen["logits"][1]).all()
    assert seen["info"].top_ks.tolist() == [V, V]


def test_candidates_come_from_preprocessed_logits():
    """A token pushed up by logit_bias (or allowed only by a grammar) is among the candidates."""
    rt = make_runtime()
    req = make_req("a", 1.0, "g:x", top_k=2)
    rt.attach(req)
    logits, seen = run_step(rt, [req], bias=7)
    assert torch.isfinite(seen["logits"][0, 7]) and int(torch.isfinite(seen["logits"][0]).sum()) == 2
    assert int(seen["logits"][0].argmax()) == 7


def test_finish_fills_metadata_and_frees_the_group():
    rt = make_runtime(group_ttl=0.0)
    req = make_req("a", 0.25, "g:team")
    rt.attach(req)
    run_step(rt, [req])
    rt.finish(req, with_metadata=True)
    meta = req.customized_info["esamp"][0]
    assert meta["group"] == "team" and meta["steps"] == 1 and meta["novelty"] > 0
    assert rt.server_stats()["held_slots"] == 0
    rt.finish(req, with_metadata=True)  # a second report of the same finish is harmless
    assert len(rt.requests.free_rows) == requests_mod.MAX_TRACKED_REQUESTS


def test_released_rows_and_a_full_novelty_table():
    rt = make_runtime()
    done, live = make_req("a", 0.5, "g:x"), make_req("b", 0.5, "g:y")
    rt.attach(done)
    rt.requests.free_rows.clear()  # the per-request table is full: "b" runs without novelty tracking
    rt.attach(live)
    assert live.esamp.row_id is None
    rt.finish(done, with_metadata=False)
    logits, seen = run_step(rt, [done, live])
    assert torch.equal(seen["logits"][0], logits[0])  # released: untouched
    assert not torch.equal(seen["logits"][1], logits[1])
    rt.finish(live, with_metadata=True)
    assert live.customized_info["esamp"][0]["novelty"] is None


def test_guard_keeps_unfiltered_rows_within_plausible_tokens_and_greedy_stays_greedy():
    rt = make_runtime(plausibility=0.2)
    reqs = [make_req("a", 1.0, "g:x"), make_req("b", 1.0, "g:x", top_k=1), make_req("c", 1.0, "g:x", top_k=5)]
    for r in reqs:
        rt.attach(r)
    logits, seen = run_step(rt, reqs)
    probs = torch.softmax(logits, -1)
    plausible = probs >= 0.2 * probs.max(-1, keepdim=True).values  # (3, V)
    assert torch.equal(torch.isfinite(seen["logits"][0]), plausible[0])
    assert torch.equal(torch.isfinite(seen["logits"][1]), plausible[1])  # greedy: argmax over the guarded tilt
    assert int(torch.isfinite(seen["logits"][2]).sum()) == 5  # a filtered row keeps its own filter, no floor
    assert seen["info"].top_ks.tolist() == [V, 1, V]


def reference_tilt(logits, h, h_hat, w, beta, mode):
    """The tilt's definition (core/tilt.py) in float64: x + beta t over the whole vocabulary."""
    lm, d = h.double() @ w.double().T, h_hat.double() @ w.double().T
    if mode == "paper":
        return logits.double() + beta * (lm - d)
    lc, dc = lm - lm.mean(-1, keepdim=True), d - d.mean(-1, keepdim=True)
    a = ((lc * dc).sum(-1) / (lc * lc).sum(-1)).unsqueeze(-1)  # least squares d ~ a lm + b, per row
    b = d.mean(-1, keepdim=True) - a * lm.mean(-1, keepdim=True)
    return logits.double() + beta * (a * lm + b - d)


def test_each_tilt_mode_matches_its_float64_definition():
    torch.manual_seed(1)
    h, h1 = torch.randn(2, D), torch.randn(2, D)
    for mode in ("paper", "residual"):
        rt = make_runtime(tilt=mode, tail_floor=0.0)  # the dense form: every token (test_tilt.py has the plausible form's)
        rt.trainer.predict = lambda layout, src: 0.7 * src[layout.rows] + 0.2  # a stand-in distiller
        reqs = [make_req("a", 1.5, "g:x"), make_req("b", 0.5, "g:y")]
        for r in reqs:
            rt.attach(r)
        logits, seen = run_step(rt, reqs, hidden=torch.cat([h1, h], -1))
        ref = reference_tilt(logits, h, 0.7 * h1 + 0.2, head(rt), torch.tensor([[1.5], [0.5]], dtype=torch.float64), mode)
        torch.testing.assert_close(seen["logits"].double(), ref, rtol=0, atol=1e-4)


def test_group_centering_tilts_by_what_sets_a_sample_apart():
    """With ``--esamp-tilt-center group`` (the default) the two rows of group x are tilted with
    predictions shifted by their mean error, in float64: each row's error less the pair's mean;
    the lone row of group y keeps its own prediction. ``none`` tilts by the raw prediction."""
    torch.manual_seed(2)
    h, h1 = torch.randn(3, D), torch.randn(3, D)
    raw = 0.7 * h1.double() + 0.2  # the stand-in distiller's predictions
    err = h.double() - raw
    centered = raw.clone()
    centered[:2] += err[:2].mean(0)
    for center, want_hat in (("group", centered), ("none", raw)):
        rt = make_runtime(tilt="paper", tail_floor=0.0, tilt_center=center)
        rt.trainer.predict = lambda layout, src: 0.7 * src[layout.rows] + 0.2
        reqs = [make_req("a", 1.0, "g:x"), make_req("b", 1.0, "g:x"), make_req("c", 1.0, "g:y")]
        for r in reqs:
            rt.attach(r)
        logits, seen = run_step(rt, reqs, hidden=torch.cat([h1, h], -1))
        ref = reference_tilt(logits, h, want_hat, head(rt), torch.ones(3, 1, dtype=torch.float64), "paper")
        torch.testing.assert_close(seen["logits"].double(), ref, rtol=0, atol=1e-4)
    assert not torch.allclose(centered[:2], raw[:2])


def stop_share(logits, stop, keep=None):
    """(rows,) the stop ids' total probability at T = 1 (within ``keep``)."""
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    return torch.nan_to_num((torch.logsumexp(logits[:, stop], -1) - torch.logsumexp(logits, -1)).exp())


def test_every_tilted_row_keeps_its_stop_probability():
    """Every cap holds on every dense, plausible and candidate row (within a candidate row's kept set),
    while without a cap the tilt raises the stop share."""
    torch.manual_seed(5)
    h, stop, w = torch.randn(16, D), [3, 5], head(make_runtime())
    h -= 0.3 * (w[3] + w[5])  # the stops unlikely in every row
    hidden = torch.cat([h, h], -1)  # shallow = deep, so that a stand-in predictor can read h
    base = h @ w.T  # untilted
    top8 = torch.zeros_like(base, dtype=torch.bool).scatter_(1, base.topk(8, -1).indices, True)
    keep = torch.where(torch.arange(16).view(-1, 1) % 2 == 1, top8, torch.ones_like(top8))
    for tilt, floor in (("paper", 0.0), ("residual", 0.0), ("residual", 0.05)):
        shares = {}
        for cap, ids in (("logit", stop), ("probability", stop), ("hold", stop), ("probability", [])):
            # uncentered: the stand-in's error is the same in every row of the group, which centering removes
            rt = make_runtime(stop_ids=ids, tilt=tilt, stop_cap=cap, tail_floor=floor, tilt_center="none")
            # a distiller that underrates the stops: the tilt raises them
            rt.trainer.predict = lambda layout, h1: h1[layout.rows] - 0.5 * (w[3] + w[5])
            reqs = [make_req(str(i), 2.0, "g:x", top_k=8 if i % 2 else V) for i in range(16)]
            for r in reqs:
                rt.attach(r)
            _, seen = run_step(rt, reqs, hidden=hidden)
            shares[cap, bool(ids)] = stop_share(seen["logits"], stop)
            unfiltered = "plausible" if floor else "dense"
            assert rt.server_stats()["tilted_rows"] == {"dense": 0, "plausible": 0, "candidates": 8} | {unfiltered: 8}
        before = stop_share(base, stop, keep)
        assert (shares["probability", False] - before).max() > 0.01  # what the tilt does uncapped
        for cap in ("logit", "probability", "hold"):
            assert (shares[cap, True] <= before + 1e-6).all(), (tilt, cap)
        torch.testing.assert_close(shares["hold", True], before, rtol=1e-4, atol=1e-7)  # and no lower


def test_penalties_and_logit_bias_are_not_scaled_by_explore():
    """The tilt is added after SGLang's processing: with a perfect distiller (h_hat = h) the
    logits SGLang samples from are exactly its own processed logits, bias included."""
    for tilt in ("paper", "residual"):
        rt = make_runtime(tilt=tilt)
        rt.trainer.predict = lambda layout, h1: h1[layout.rows]
        reqs = [make_req("a", 2.0, "g:x"), make_req("b", 2.0, "g:x", top_k=5)]
        for r in reqs:
            rt.attach(r)
        h = torch.randn(2, D)
        logits, seen = run_step(rt, reqs, bias=7, hidden=torch.cat([h, h], -1))
        processed = logits.clone()
        processed[:, 7] += 100.0
        torch.testing.assert_close(seen["logits"][0], processed[0], rtol=0, atol=1e-4)
        kept = torch.isfinite(seen["logits"][1])
        assert int(kept.sum()) == 5 and kept[7]
        torch.testing.assert_close(seen["logits"][1][kept], processed[1][kept], rtol=0, atol=1e-4)


def test_the_hidden_state_hook_only_widens_its_own_processors_states():
    rt = make_runtime()
    h = torch.randn(3, D)
    assert rt.store_hidden_states(SimpleNamespace(), h, h, None, h, None, metadata(extend=False)) is h  # another processor
    wide = rt.store_hidden_states(PROCESSOR, h, 2 * h, None, 2 * h, None, metadata(extend=False))
    assert torch.equal(wide, torch.cat([h, 2 * h], -1))


def prefill(rt, reqs, lens, starts, h1, h):
    """A prefill forward of these requests over ``lens`` new tokens each (h1, h: every token)."""
    batch = make_batch(reqs, decode=False, extend_seq_lens_cpu=lens, extend_prefix_lens_cpu=starts)
    with rt.forward(batch):
        rt.store_hidden_states(PROCESSOR, h1[: len(reqs)], h, h1, h[: len(reqs)], None, metadata(extend=True))


def test_prompt_init_fits_each_new_group_once_on_its_prefilled_tokens():
    rt = make_runtime(init="prompt", prompt_steps=3)
    reqs = [make_req("a", 0.5, "g:x"), make_req("b"), make_req("c", 0.25, "g:y")]
    for r in reqs:
        rt.attach(r)
    sa, sc = reqs[0].esamp.slot, reqs[2].esamp.slot
    assert rt.prompt_pending == {sa, sc}
    twin = make_runtime(init="random")  # the same random start, trained by hand on the expected rows
    for r in (make_req("a2", 0.5, "g:x"), make_req("c2", 0.25, "g:y")):
        twin.attach(r)
    # request a: a whole prompt of 4 tokens; b: no ESamp; c: 3 new tokens after a cached prefix
    lens, starts = [4, 2, 3], [0, 0, 5]
    h1, h = torch.randn(9, D), torch.randn(9, D)
    prefill(rt, reqs, lens, starts, h1, h)
    assert rt.prompt_pending == set() and rt.trainer.submitted == 3
    assert rt.stats.snapshot(sa)["steps"] == rt.stats.snapshot(sc)["steps"] == 3
    rows = [1, 2, 3, 6, 7, 8]  # a's first token (position 0) and all of b are left out
    from sglang_esamp.core import BatchLayout

    layout = BatchLayout.from_slots([sa] * 3 + [sc] * 3)
    for _ in range(3):
        twin.trainer.submit(layout, h1[rows], h[rows])
    for k in rt.bank.params:
        assert torch.allclose(rt.bank.params[k], twin.bank.params[k], atol=1e-6), k
    # a later prefill of the same groups (their other samples) trains nothing more
    prefill(rt, reqs, lens, starts, h1, h)
    assert rt.trainer.submitted == 3


def test_inits_without_prompt_fit_nothing():
    rt = make_runtime(init="random")
    req = make_req("a", 0.5, "g:x")
    rt.attach(req)
    assert rt.prompt_pending == set()
    prefill(rt, [req], [4], [0], torch.randn(4, D), torch.randn(4, D))
    assert rt.trainer.submitted == 0


def test_a_groups_prompt_fit_is_bounded_whatever_its_requests(monkeypatch):
    """Two requests of one new group in one prefill: the fit takes at most PROMPT_ROWS rows
    for the group (the first request's last ones), not PROMPT_ROWS per request."""
    from sglang_esamp.runtime import runtime as runtime_mod

    monkeypatch.setattr(runtime_mod, "PROMPT_ROWS", 4)
    rt = make_runtime(init="prompt", prompt_steps=1)
    reqs = [make_req("a", 0.5, "g:x"), make_req("b", 0.5, "g:x")]
    for r in reqs:
        rt.attach(r)
    seen = []
    real = rt.trainer.submit
    rt.trainer.submit = lambda layout, src, tgt, repeat=0: (seen.append((layout.num_rows, repeat)), real(layout, src, tgt, repeat))
    prefill(rt, reqs, [6, 6], [0, 0], torch.randn(12, D), torch.randn(12, D))
    assert seen == [(4, 1)]  # steps of their own, never held by --esamp-train-every


def test_a_tilt_fault_leaves_every_row_untilted(monkeypatch):
    """A fault anywhere in the tilt (here: in the stop cap after the tilt, and in the
    candidate rows' tilt after the plausible rows') leaves the batch's logits as SGLang made them:
    the rows sample untilted, not tilted without their cap."""
    from sglang_esamp.runtime import tilting

    def broken(*args, **kwargs):
        raise RuntimeError("tilt fault (injected)")

    for where, reqs in (("cap", [make_req("a", 0.5, "g:x"), make_req("b", 0.5, "g:x")]),
                        ("candidates", [make_req("a", 0.5, "g:x"), make_req("b", 0.5, "g:y", top_k=4)])):
        rt = make_runtime(stop_ids=[0, 1], stop_cap="probability")  # a cap the plausible form calls (not hold)
        with monkeypatch.context() as patch:
            if where == "cap":
                patch.setattr(rt.tilter.stop_cap, "apply", broken)  # the dense and candidate forms' cap
                patch.setattr(rt.tilter.stop_cap, "plausible", broken)  # the plausible form's
            else:
                patch.setattr(tilting, "tilt_candidates", broken)
            for r in reqs:
                rt.attach(r)
            logits, seen = run_step(rt, reqs)
        assert rt.faults == {"tilt": 1}, where
        assert torch.equal(seen["logits"], logits), where


def test_publishing_metrics_changes_no_distiller_state():
    """Only one tensor-parallel rank reports /metrics. Publishing must neither drain the trainer
    nor expire groups there, or that rank would train (every 2: a held batch as a step of its
    own) and free slots at other points than the others."""
    rt = make_runtime(train_every=2)
    rt.tp_size = 2
    published = []
    rt.metrics = SimpleNamespace(due=lambda force=False: True, update=lambda stats, seconds: published.append(stats),
                                 observe_rel_err=lambda value: None)
    reqs = [make_req("a", 0.5, "g:x"), make_req("b", 0.5, "g:y")]
    for r in reqs:
        rt.attach(r)
    run_step(rt, reqs)  # one decode batch, held for the next
    rt.finish(reqs[1], with_metadata=True)
    assert published and rt.trainer.submitted == 0


def test_under_tensor_parallelism_idle_groups_leave_by_use_not_by_the_clock():
    """Each rank has its own wall clock: under tensor parallelism the ttl is not applied, and an
    idle group keeps its slot until another group needs one (least recently used first)."""
    import time

    torch.manual_seed(0)
    cfg = ESampConfig(distiller="mlp", max_groups=2, intermediate=8, trainer="inline", group_ttl=0.01)
    rt = ESampRuntime(cfg, D, Head(torch.randn(V, D)), None, "cpu", processor=PROCESSOR, tp_size=2)
    a, b, c = make_req("a", 0.5, "g:a"), make_req("b", 0.5, "g:b"), make_req("c", 0.5, "g:c")
    rt.attach(a)
    rt.finish(a, with_metadata=False)
    time.sleep(0.05)  # past the ttl on any clock
    rt.attach(b)
    assert rt.requests.table.slot_of("g:a") is not None  # a free slot was left: no eviction
    rt.attach(c)  # every slot taken: the idle group goes
    assert rt.requests.table.slot_of("g:a") is None and rt.requests.table.evictions == 1


def test_a_prompt_fits_rows_enter_the_bases_reservoir_once():
    """A prompt fit trains ``prompt_steps`` steps on the same rows; the base, which learns
    the model's generic map from the server's rows, takes them once."""
    rt = make_runtime(init="calibrated+prompt", prompt_steps=3)
    req = make_req("a", 0.5, "g:x")
    rt.attach(req)
    prefill(rt, [req], [6], [0], torch.randn(6, D), torch.randn(6, D))
    assert rt.trainer.submitted == 3 and rt.warm.reservoir.added == 5  # the prompt less its first token


def test_a_saved_base_of_another_shape_is_ignored_and_the_base_starts_afresh(tmp_path, caplog):
    from sglang_esamp.core.distiller import build_architecture, random_init
    from sglang_esamp.core.warm_base import WarmBase
    from sglang_esamp.runtime.base import BaseStore

    other = build_architecture("mlp", D + 1, 8, 64)  # a base saved for another hidden size
    store = BaseStore(tmp_path / "base.pt")
    store.save(WarmBase(other, D + 1, "cpu", torch.float32, random_init(other.shapes(), 1, torch.Generator(), None), steps=700,
                        rows=9000))
    cfg = ESampConfig(distiller="mlp", max_groups=2, intermediate=8, trainer="inline", init="calibrated")
    rt = ESampRuntime(cfg, D, Head(torch.randn(V, D)), None, "cpu", store=store, processor=PROCESSOR)
    assert f"ignoring the base distiller {store.path}" in caplog.text and "does not fit" in caplog.text
    assert rt.bank.base is None and (rt.warm.steps, rt.warm.rows, rt.warm.fitted) == (0, 0, False)
    assert {k: tuple(v.shape) for k, v in rt.warm.params.items()} == {k: (1, *s) for k, s in rt.bank.arch.shapes().items()}


def test_the_hidden_state_contract_between_the_hooks():
    """step.py: the capture hook widens SGLang's (rows, D) to [h1 | h]; sample splits it, puts
    h1 back and trains on (h1, h); the tilt inside SGLang's sample finds the step as
    ``active``, set only while it runs."""
    rt = make_runtime(tail_floor=0.0)  # the dense form moves every token, so the check below sees the tilt
    req = make_req("a", 1.0, "g:x")
    rt.attach(req)
    h1, h = torch.randn(1, D), torch.randn(1, D)
    info = Info(torch.ones(1, 1), torch.tensor([V]), torch.tensor([1.0]), torch.tensor([0.0]))
    batch = make_batch([req], True, info)
    step = batch.esamp
    with rt.forward(batch):
        assert rt.active is step
        stored = rt.store_hidden_states(PROCESSOR, h1, h, None, h, None, metadata(extend=False))
    assert rt.active is None and torch.equal(stored, torch.cat([h1, h], -1))
    trained, seen = [], {}
    rt.trainer.submit = lambda layout, src, tgt, alone=False: trained.append((src, tgt))

    def sample(lo, fb):
        seen["active"], seen["hidden"] = rt.active, lo.hidden_states
        before = lo.next_token_logits.clone()
        rt.apply_tilt(lo)
        seen["tilted"] = not torch.equal(before, lo.next_token_logits)
        return lo.next_token_logits.argmax(-1)

    out = SimpleNamespace(hidden_states=stored, next_token_logits=h @ head(rt).T)
    rt.sample(sample, out, batch)
    assert seen["active"] is step and torch.equal(seen["hidden"], h1) and seen["tilted"]
    assert rt.active is None and torch.equal(out.hidden_states, h1)
    assert len(trained) == 1 and torch.equal(trained[0][0], h1) and torch.equal(trained[0][1], h)
    logits = torch.randn(1, V)
    outside = SimpleNamespace(next_token_logits=logits.clone())
    rt.apply_tilt(outside)  # no active step: nothing to tilt
    assert torch.equal(outside.next_token_logits, logits)
    narrow = SimpleNamespace(hidden_states=h1, next_token_logits=h @ head(rt).T)  # not widened: untilted, untrained
    rt.sample(sample, narrow, make_batch([req], True, info))
    assert seen["active"] is None and not seen["tilted"] and len(trained) == 1


def test_a_chunked_prompt_fits_on_its_final_chunk():
    """Chunked prefill: a 10-token prompt in chunks of 6 and 4. The first chunk fits nothing
    and leaves the fit pending; the final chunk's 4 tokens are the rows it fits on."""
    rt = make_runtime(init="prompt", prompt_steps=1)
    req = make_req("a", 0.5, "g:x")
    req.origin_input_ids = list(range(10))
    rt.attach(req)
    seen = []
    real = rt.trainer.submit
    rt.trainer.submit = lambda layout, src, tgt, repeat=0: (seen.append(src.clone()), real(layout, src, tgt, repeat))
    h1, h = torch.randn(10, D), torch.randn(10, D)
    prefill(rt, [req], [6], [0], h1[:6], h[:6])
    assert seen == [] and rt.prompt_pending == {req.esamp.slot}
    prefill(rt, [req], [4], [6], h1[6:], h[6:])
    assert len(seen) == 1 and torch.equal(seen[0], h1[6:]) and rt.prompt_pending == set()

