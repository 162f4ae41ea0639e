"""ESampRuntime: the scheduler-side state of ESamp for one model runner.

It owns the core pieces (distiller bank, trainer, group table, stats) and the per-request
bookkeeping, and does the per-step work that the hooks ask for:

- ``attach(req)`` when the scheduler creates a request: find or open its group's slot;
- ``step(...)`` around ``ModelRunner.sample``: predict, sample, then queue training;
- ``fit_prompts(...)`` inside a prefill, for ``--esamp-init *prompt``: queue a new group's
  training steps on its prompt's rows, before its first prediction;
- ``prepare(...)`` inside an eager forward, before the LM head: predict, and tilt the
  unfiltered rows in the head's input (``latent_logits`` then runs the head on it);
- ``apply_tilt(...)`` after SGLang's logit preprocessing (penalties, grammar, bias): tilt
  the rest;
- ``finish(req)`` when a request finishes or is aborted: fill its metadata, free its rows.

One decode step::

    h1, hL (captured) -> predict h_hat = f_group(h1) -> tilt rows with explore > 0
      -> SGLang samples -> trainer.submit(h1, hL)  (decode batches only; async)

Where the tilt happens: an unfiltered row (no top-k/top-p/min-p, guard off) is tilted in
the LM head's input when the forward runs eagerly (CPU, or a batch without a CUDA graph):
one head matmul on the mixed state instead of a second one on h_hat. A replayed CUDA graph
skips the Python hooks, so there the same rows take the dense form after the forward.
Filtered and guarded rows always take the candidate form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass

import torch

from ..core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats, GroupTable
from ..core.tilt import cap_stop_mass, head_gram, mix_hidden, mix_residual, tilt_candidates, tilt_dense
from .filters import filter_mask
from .params import CUSTOM_KEY, group_label

logger = logging.getLogger(__name__)

MAX_TRACKED_REQUESTS = 65536  # rows of the per-request novelty table
PROMPT_ROWS = 1024  # a prompt fit uses at most this many of each request's last prefilled tokens
# With --esamp-stop-cap probability, the head-input form computes the untilted logits of 1 in
# this many of its rows (those likeliest to stop): a second head matmul on every row would
# cost what the form saves (the dense form measured 0.853 of vanilla's speed on the CPU).
MASS_CAP_SHARE = 8


@dataclass
class TiltPlan:
    layout: BatchLayout
    h_hat: torch.Tensor  # (M, D), rows = layout.rows
    betas: list[float]  # per layout row
    dense: list[int]  # indices into layout.rows: full-vocabulary tilt (greedy or unfiltered)
    cand: list[int]  # indices into layout.rows: tilt over the filters' (or the guard's) candidates
    floors: list[float]  # per cand row: the guard's plausibility floor, 0 for a row with its own filters
    min_p_only: bool  # no cand row has top-k or top-p (host-side): its keep set needs no sort
    info: object  # the batch's SamplingBatchInfo, whose filters define the candidates
    sample_info: object  # what SGLang samples with: neutral filters on the candidate rows


@dataclass
class Prepared:
    """What ``prepare`` did inside one eager forward, for ``latent_logits`` and ``step``
    (which finds it on its forward batch, so a delayed sample still gets its own)."""
    layout: BatchLayout
    h_hat: torch.Tensor  # (M, D), rows = layout.rows
    latent: list[int]  # indices into layout.rows tilted in the head's input
    src: torch.Tensor | None  # (rows, D) the head input to replace; None once replaced
    mixed: torch.Tensor | None  # (rows, D) what the head reads instead
    rows: torch.Tensor | None  # (L,) batch rows of ``latent``
    shift: torch.Tensor | None  # (L,) tilted-logit offset of those rows (see core.tilt.mix_residual)


@dataclass
class RequestState:
    beta: float
    key: str
    slot: int | None  # None: every slot was busy, the request samples untilted
    row_id: int | None  # index into the per-request novelty table; None when it is full
    released: bool = False


class ESampRuntime:
    def __init__(
        self, cfg: ESampConfig, hidden: int, head_weight: torch.Tensor, out_gain: torch.Tensor | None, device,
        stop_ids: list[int] | None = None, base: dict[str, torch.Tensor] | None = None, vocab_size: int | None = None,
    ):
        self.cfg = cfg
        # end-of-sequence ids: the tilt never raises their logits (a young distiller underrates
        # them, and the paper's tilt then ends up to half of the samples early on SmolLM2)
        self.stop_ids = torch.tensor(sorted(stop_ids or []), dtype=torch.int64, device=device)
        self.hidden = hidden
        # (V_padded, D), the LM head. On a CPU, a float32 copy: without native bf16 the tilt's
        # head matmul for 32 rows took 114 ms in bf16 and 54 ms in fp32 on a 2-core AVX2 machine.
        self.head_weight = head_weight.detach().float() if head_weight.device.type == "cpu" else head_weight
        self.vocab = vocab_size or head_weight.shape[0]
        if cfg.tilt == "residual":  # the affine fit over the whole vocabulary, in D dimensions
            self.head_gram = head_gram(self.head_weight[: self.vocab])  # (D, D)
            self.head_mean = self.head_weight[: self.vocab].float().mean(0)  # (D,)
        self.forward_batch = None  # the ForwardBatch of the forward under way (begin_forward .. end_forward)
        self.prepared: Prepared | None = None  # what prepare() did in it, for latent_logits()
        self.bank = DistillerBank(cfg, hidden, device, out_gain=out_gain, base=base)
        self.stats = GroupStats(cfg.max_groups, device)
        self.trainer = AsyncTrainer(self.bank, self.stats, cfg.staleness, cfg.trainer)
        self.table = GroupTable(cfg.max_groups, cfg.group_ttl)
        self.used_slots: set[int] = set()
        self.prompt_pending: set[int] = set()  # slots of new groups that have not fitted their prompt yet
        self.pending: TiltPlan | None = None  # set by step() for apply_tilt() inside SGLang's sample
        self.tilted_rows = {"head_input": 0, "dense": 0, "candidates": 0}  # row-steps per form of the tilt
        self.novelty_sum = torch.zeros(MAX_TRACKED_REQUESTS, device=device)
        self.novelty_count = torch.zeros(MAX_TRACKED_REQUESTS, device=device)
        self.free_rows = list(range(MAX_TRACKED_REQUESTS - 1, -1, -1))
        logger.info(
            "ESamp enabled: %s; %.1f MB per group, %d groups",
            ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()),
            self.bank.bytes_per_group / 2**20, cfg.max_groups,
        )

    # ---- request lifecycle (host only) ----

    def attach(self, req) -> None:
        custom = req.sampling_params.custom_params or {}
        spec = custom.get(CUSTOM_KEY)
        if spec is None:
            return
        key = spec["group"]
        if self.cfg.group_by == "prompt" and key.startswith("r:"):
            key = "p:" + hashlib.sha1(str(list(req.origin_input_ids)).encode()).hexdigest()
        slot, fresh = self.table.acquire(key)
        if slot is not None and fresh:
            if slot in self.used_slots:
                self.trainer.drain()  # no queued step of the slot's last group may touch the new one
            self.bank.reset([slot])
            self.stats.clear([slot])
            self.used_slots.add(slot)
            if self.cfg.prompt_fit:
                self.prompt_pending.add(slot)
        row_id = self.free_rows.pop() if self.free_rows else None
        if row_id is not None:
            self.novelty_sum[row_id] = 0.0
            self.novelty_count[row_id] = 0.0
        req.esamp = RequestState(spec["explore"], key, slot, row_id)

    def finish(self, req, with_metadata: bool) -> None:
        state: RequestState | None = getattr(req, "esamp", None)
        if state is None or state.released:
            return
        state.released = True
        if with_metadata:
            info = {"group": group_label(state.key), "explore": state.beta, "slot": state.slot}
            if state.slot is not None:
                snap = self.stats.snapshot(state.slot)
                info |= {k: snap[k] for k in ("steps", "loss", "loss_mean", "rel_err")}
            count = float(self.novelty_count[state.row_id]) if state.row_id is not None else 0.0
            info["novelty"] = float(self.novelty_sum[state.row_id]) / count if count else None
            req.customized_info = dict(req.customized_info or {}) | {"esamp": [info]}
        if state.row_id is not None:
            self.free_rows.append(state.row_id)
        self.table.release(state.key)

    def server_stats(self) -> dict:
        self.table.expire()
        return {
            "live_groups": self.table.live,
            "held_slots": len(self.table.entries),
            "max_groups": self.cfg.max_groups,
            "steps_submitted": self.trainer.submitted,
            "steps_finished": self.trainer.finished,
            "skipped_steps": self.stats.total_skipped,
            "resets": self.stats.total_resets,
            "evictions": self.table.evictions,
            "denied_groups": self.table.denied,
            "bytes_per_group": self.bank.bytes_per_group,
            "tilted_rows": dict(self.tilted_rows),
            "config": dataclasses.asdict(self.cfg),
        }

    # ---- one batch: prepare (inside an eager forward), then step (around ModelRunner.sample) ----

    def _slots(self, reqs) -> tuple[list, list[int]]:
        states = [getattr(r, "esamp", None) for r in reqs]
        # a released request can still sit in an overlapped batch: its slot may be a new group's
        return states, [s.slot if s is not None and s.slot is not None and not s.released else -1 for s in states]

    @staticmethod
    def _filtered(sp, vocab: int) -> bool:
        """Sampled (not greedy) with top-k, top-p or min-p."""
        return sp.top_k != 1 and (0 < sp.top_k < vocab or sp.top_p < 1.0 or sp.min_p > 0.0)

    def _is_dense(self, state, req) -> bool:
        """Tilted over the whole vocabulary: explore > 0, no filter, guard off (greedy included)."""
        return state.beta > 0 and not self._filtered(req.sampling_params, self.vocab) and self.cfg.plausibility <= 0

    def begin_forward(self, forward_batch) -> None:
        self.forward_batch, self.prepared = forward_batch, None

    def end_forward(self) -> None:
        self.forward_batch, self.prepared = None, None

    def fit_prompts(self, h1: torch.Tensor, h: torch.Tensor) -> None:
        """Inside a prefill: queue ``prompt_steps`` training steps for every group in the batch
        that has not fitted its prompt yet, on its requests' prefilled tokens (the last
        ``PROMPT_ROWS`` of each; not a sequence's first token, which no decode step resembles).
        h1, h: (tokens, D), every token of the batch: the shallow states and the head's input."""
        batch = self.forward_batch
        reqs = getattr(batch, "esamp_reqs", None)
        lens = getattr(batch, "extend_seq_lens_cpu", None)
        starts = getattr(batch, "extend_prefix_lens_cpu", None) or [1] * len(lens or ())
        if not reqs or lens is None or len(lens) != len(reqs) or sum(lens) != h.shape[0]:
            return
        _, slots = self._slots(reqs)
        rows, row_slots, offset = [], [], 0
        for slot, n, start in zip(slots, lens, starts):
            if slot in self.prompt_pending:
                first = offset + max(n - PROMPT_ROWS, 1 if start == 0 else 0)
                rows += range(first, offset + n)
                row_slots += [slot] * (offset + n - first)
            offset += n
        if not rows:
            return
        self.prompt_pending -= set(row_slots)
        idx = torch.tensor(rows, dtype=torch.int64).to(h.device, non_blocking=True)
        layout = BatchLayout.from_slots(row_slots, h.device)
        src, tgt = h1[idx], h[idx]  # (rows, D) each
        for _ in range(self.cfg.prompt_steps):
            self.trainer.submit(layout, src, tgt)

    def prepare(self, h1: torch.Tensor, h: torch.Tensor) -> None:
        """Inside an eager forward, before the LM head: predict, and mix the dense rows' tilt
        into ``h`` (rows, D), the head's input. h1: (rows, D) the captured shallow states.
        The result rides on the forward batch to ``step``."""
        batch = self.forward_batch
        reqs = getattr(batch, "esamp_reqs", None)
        if not reqs or len(reqs) != h.shape[0]:
            return
        states, slots = self._slots(reqs)
        if max(slots, default=-1) < 0:
            return
        layout = BatchLayout.from_slots(slots, h1.device)
        h_hat = self.trainer.predict(layout, h1)  # (M, D)
        latent = [i for i, row in enumerate(layout.row_list) if self._is_dense(states[row], reqs[row])]
        prep = Prepared(layout, h_hat, latent, None, None, None, None)
        if latent:
            idx = torch.tensor(latent, device=h.device)
            rows = layout.rows[idx]
            beta = torch.tensor([states[layout.row_list[i]].beta for i in latent], device=h.device)
            if self.cfg.tilt == "residual":
                mixed_rows, shift = mix_residual(h[rows], h_hat[idx], beta, self.head_gram, self.head_mean)
            else:
                mixed_rows, shift = mix_hidden(h[rows], h_hat[idx], beta), torch.zeros_like(beta)
            mixed = h.clone()
            mixed[rows] = mixed_rows
            prep.src, prep.mixed, prep.rows, prep.shift = h, mixed, rows, shift
        self.prepared = batch.esamp_prepared = prep

    def latent_logits(self, head_fn, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Logits of the prepared mixed state if ``hidden_states`` is the head input that
        ``prepare`` saw (once), with the stop cap; None otherwise."""
        prep = self.prepared
        if prep is None or prep.src is None or prep.src is not hidden_states:
            return None
        src, prep.src = prep.src, None
        logits = head_fn(prep.mixed)  # (rows, V)
        if self.stop_ids.numel():  # untilted stop logits, on the tilted logits' offset
            src_rows = src[prep.rows].to(self.head_weight.dtype)  # (L, D)
            before = src_rows @ self.head_weight[self.stop_ids].t() + prep.shift.unsqueeze(-1)
            cols = self.stop_ids.unsqueeze(0)
            rows = prep.rows.unsqueeze(1)
            logits[rows, cols] = torch.minimum(logits[rows, cols], before.to(logits.dtype))
            if self.cfg.stop_cap == "probability":
                self._cap_latent_mass(logits, src_rows, prep.rows)
        return logits

    def _cap_latent_mass(self, logits: torch.Tensor, src_rows: torch.Tensor, rows: torch.Tensor) -> None:
        """The probability stop cap on the head-input rows (``rows``, (L,)) likeliest to stop
        under the tilt: ceil(L / MASS_CAP_SHARE) of them get their untilted logits from
        ``src_rows`` (L, D) and are capped in place; every other row's tilted stop
        probability is below all of theirs."""
        temps = self.forward_batch.sampling_info.temperatures[rows].view(-1).float()  # (L,)
        scaled = logits[rows].float() / temps.unsqueeze(-1)  # (L, V)
        stop_lp = torch.logsumexp(scaled[:, self.stop_ids], -1) - torch.logsumexp(scaled, -1)  # (L,)
        pick = torch.topk(stop_lp, -(-len(rows) // MASS_CAP_SHARE)).indices  # (m,)
        before = src_rows[pick] @ self.head_weight[: logits.shape[-1]].t()  # (m, V)
        r = rows[pick]
        logits[r] = cap_stop_mass(logits[r], before.to(logits.dtype), self.stop_ids, temps[pick])

    def step(self, sample, logits_output, forward_batch, reqs):
        """Predict (unless ``prepare`` did), call SGLang's ``sample`` (which calls back
        ``apply_tilt`` once its penalties, grammar mask and logit bias are in), then queue
        training. Returns its token ids."""
        prep = getattr(forward_batch, "esamp_prepared", None)
        forward_batch.esamp_prepared = None
        states, slots = self._slots(reqs)
        captured = logits_output.hidden_states
        if max(slots, default=-1) < 0 or captured is None or captured.shape[-1] != 2 * self.hidden:
            return sample(logits_output, forward_batch)
        h1, h = captured[:, : self.hidden], captured[:, self.hidden :]  # (rows, D) each
        logits_output.hidden_states = h1  # what SGLang itself captures in this mode
        if prep is not None:  # rows in prep.latent are tilted already, if the head read the mixed state
            layout, h_hat, done = prep.layout, prep.h_hat, set(prep.latent if prep.src is None else ())
        else:  # a replayed graph
            layout = BatchLayout.from_slots(slots, h1.device)
            h_hat, done = self.trainer.predict(layout, h1), set()  # (M, D)
        self._record_novelty(states, layout, h, h_hat)
        saved = forward_batch.sampling_info
        plan = self._plan_tilt(layout, h_hat, states, reqs, saved, logits_output.next_token_logits.shape[-1], done)
        self.tilted_rows["head_input"] += len(done)
        if plan is not None:
            self.tilted_rows["dense"] += len(plan.dense)
            self.tilted_rows["candidates"] += len(plan.cand)
            self.pending = plan
            forward_batch.sampling_info = plan.sample_info
        try:
            ids = sample(logits_output, forward_batch)
        finally:
            self.pending = None
            if forward_batch.sampling_info is not saved:
                saved.grammar_mask = forward_batch.sampling_info.grammar_mask  # SGLang frees it after use
                forward_batch.sampling_info = saved
        if forward_batch.forward_mode.is_decode():
            self.trainer.submit(layout, h1, h)
        return ids

    def _record_novelty(self, states, layout, h, h_hat) -> None:
        ids = [states[r].row_id for r in layout.row_list]
        if None in ids:  # the table is full: leave the untracked requests out
            keep = [i for i, r in enumerate(ids) if r is not None]
            ids, h_hat = [ids[i] for i in keep], h_hat[keep]
            rows_idx = layout.rows[keep]
        else:
            rows_idx = layout.rows
        rows = torch.tensor(ids, dtype=torch.int64, device=h.device)
        novelty = (h[rows_idx].float() - h_hat.float()).norm(dim=-1)  # (M,)
        self.novelty_sum.index_add_(0, rows, novelty)
        self.novelty_count.index_add_(0, rows, torch.ones_like(novelty))

    def _plan_tilt(self, layout, h_hat, states, reqs, info, vocab, done) -> TiltPlan | None:
        """Sort the rows with beta > 0 that ``prepare`` has not tilted (``done``) into dense and
        candidate rows (from host-side request values: no device read). A row with
        top-k/top-p/min-p tilts within its filters' candidates; with the guard on
        (``plausibility`` > 0), every other row tilts within its plausible tokens. Candidate
        rows are sampled with neutral filters (the tilt has already sent the excluded tokens
        to -inf), except greedy rows, which keep top-k 1."""
        dense, cand, floors = [], [], []
        guard = self.cfg.plausibility
        min_p_only = True
        for i, row in enumerate(layout.row_list):
            if states[row].beta <= 0 or i in done:
                continue
            sp = reqs[row].sampling_params
            filtered = self._filtered(sp, vocab)
            if filtered or guard > 0:
                cand.append(i)
                floors.append(0.0 if filtered else guard)
                min_p_only &= not filtered or (not 0 < sp.top_k < vocab and sp.top_p >= 1.0)
            else:
                dense.append(i)
        if not dense and not cand:
            return None
        sample_info = info
        sampled = [layout.row_list[i] for i in cand if reqs[layout.row_list[i]].sampling_params.top_k != 1]
        if sampled:
            sample_info = dataclasses.replace(info, top_ks=info.top_ks.clone(), top_ps=info.top_ps.clone(), min_ps=info.min_ps.clone())
            sample_info.top_ks[sampled] = vocab
            sample_info.top_ps[sampled] = 1.0
            sample_info.min_ps[sampled] = 0.0
        return TiltPlan(layout, h_hat, [states[r].beta for r in layout.row_list], dense, cand, floors, min_p_only, info, sample_info)

    def apply_tilt(self, logits_output) -> None:
        """Tilt the planned rows in place, after SGLang's penalties, grammar and logit bias,
        so that candidate sets are those its filters would keep from these very logits."""
        plan, self.pending = self.pending, None
        if plan is None:
            return
        logits = logits_output.next_token_logits  # (rows, V)
        head = self.head_weight[: logits.shape[-1]]
        info, mode = plan.info, self.cfg.tilt
        for part in (plan.dense, plan.cand):
            if not part:
                continue
            idx = torch.tensor(part, device=logits.device)
            r = plan.layout.rows[idx]
            beta = torch.tensor([plan.betas[i] for i in part], device=logits.device)
            before = logits[r]
            if part is plan.dense:
                logits[r] = self._cap_stops(tilt_dense(before, plan.h_hat[idx], head, beta, mode=mode), before, info.temperatures[r])
                continue
            floor = torch.tensor(plan.floors, device=logits.device)
            guarded = floor > 0  # rows without filters: plausibility floor at the row's temperature
            top_k = torch.where(guarded, torch.full_like(info.top_ks[r], logits.shape[-1]), info.top_ks[r])
            top_p = torch.where(guarded, torch.ones_like(info.top_ps[r]), info.top_ps[r])
            min_p = torch.where(guarded, floor.to(info.min_ps.dtype), info.min_ps[r])
            keep = filter_mask(logits[r], info.temperatures[r].view(-1), top_k, top_p, min_p, plan.min_p_only)
            tilted = tilt_candidates(before, plan.h_hat[idx], head, beta, keep, mode=mode)
            logits[r] = self._cap_stops(tilted, before, info.temperatures[r], keep)

    def _cap_stops(self, tilted: torch.Tensor, before: torch.Tensor, temps: torch.Tensor, keep=None) -> torch.Tensor:
        """(n, V) tilted logits with every stop id's logit at most its untilted value; with
        ``stop_cap == "probability"`` also the stop ids' total probability at the rows' (n,)
        temperatures ``temps``, within ``keep`` (n, V) if given."""
        if self.stop_ids.numel():
            tilted[:, self.stop_ids] = torch.minimum(tilted[:, self.stop_ids], before[:, self.stop_ids])
            if self.cfg.stop_cap == "probability":
                tilted = cap_stop_mass(tilted, before, self.stop_ids, temps.view(-1), keep)
        return tilted
