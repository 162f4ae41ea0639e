"""ESampRuntime: ESamp's state in one scheduler process, and the work each hook asks of it.

It owns the core pieces (distiller bank, trainer, stats) and the runtime pieces (request
tracker, tilter) and drives one decode step through them. Each method below is what one
hook in ``hooks.py`` calls; the step's hand-offs travel in a ``Step`` (``step.py``)::

    init_new        Step.of(batch.reqs) -> forward_batch.esamp
    forward         forward(fb): the step is active while the model runs
      hidden states store_hidden_states: keep the head's input beside layer 0's output;
                    in a prefill, fit new groups on their prompt
    sample          sample: predict h_hat = f_group(h1), plan the rows, keep the model's
                    logits of the tilted rows, swap in neutral filters for CANDIDATES
                    rows, call SGLang's sample
      preprocess    apply_tilt: DENSE and CANDIDATES rows, after penalties, grammar, bias
      draw          draw: stratified rows take their codes' tokens (SGLang's own draw
                    skipped when every row is stratified)
                    then trainer.submit(h1, h) (decode batches only)
    idle            the scheduler has nothing to run: the base distiller trains instead of
                    sleeping (``calibrated`` inits)

Usage::

    runtime = ESampRuntime.from_runner(model_runner, cfg)   # in the scheduler, before graphs are captured
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

import torch

from ..core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats, Head, StopCap, rows_dot
from ..core.distiller import norm_gain, random_init
from ..core.tilt import center_on_group
from ..core.trainer import TRACE_EVERY
from ..core.warm_base import MIN_ROWS, WarmBase
from .base import BaseStore, SavedBase
from .footprint import held_bytes
from .metrics import ESampMetrics
from .plan import TILTED, plan_rows
from .prefixes import shared_rows
from .requests import RequestTracker
from .step import Step
from .tilting import Tilter, sampling_params_for
from .trace import StepTrace

logger = logging.getLogger(__name__)

PROMPT_ROWS = 1024  # a group's prompt fit uses at most this many prefilled tokens (each request's last ones)
IDLE_SLICE = 0.05  # seconds of base training per idle turn of the scheduler (the latency a new request may meet)
SAVE_EVERY = 60.0  # seconds between two saves of a base that keeps training
TP_IDLE_STEPS = 2  # base steps per idle turn under tensor parallelism (a count, not a time: the ranks must agree)


def _still() -> float:
    """The ttl's clock under tensor parallelism: it stands still, so no group expires by time."""
    return 0.0


class ESampRuntime:
    def __init__(
        self, cfg: ESampConfig, hidden: int, head: Head, out_gain: torch.Tensor | None, device,
        stop_ids: list[int] | None = None, store: BaseStore | None = None, dtype: torch.dtype = torch.float32,
        processor=None, tp_rank: int = 0, tp_size: int = 1,
    ):
        self.cfg, self.hidden = cfg, hidden
        self.tp_rank, self.tp_size = tp_rank, tp_size  # tensor parallel: every rank runs the same distillers
        self.trace = StepTrace(device) if tp_size > 1 else None  # per step, to compare the ranks
        self.processor = processor  # the model's LogitsProcessor, whose hidden states ESamp captures
        self.store = store  # where the base is saved (``calibrated`` inits)
        saved = store.load() if store is not None else None
        try:
            self.bank = DistillerBank(cfg, hidden, device, out_gain=out_gain, base=saved.params if saved else None)
        except ValueError as exc:  # a saved base that does not fit this distiller
            logger.warning("ESamp: ignoring the base distiller %s: %s", store.path, exc)
            saved = None
            self.bank = DistillerBank(cfg, hidden, device, out_gain=out_gain)
        self.warm = self._warm_base(saved, dtype) if cfg.calibrated else None
        self._saved_at = -float("inf")
        self._saved_steps = None  # the base's steps at its last save by this server
        self.stats = GroupStats(cfg.max_groups, device, self.bank.streams)
        self.trainer = AsyncTrainer(self.bank, self.stats, cfg.staleness, cfg.trainer, warm=self.warm, on_fitted=self._save_base,
                                    every=cfg.train_every, lockstep=tp_size > 1)  # TP: predictions by step count, not timing
        # tensor parallel: every rank must free the same slots at the same step, and their wall clocks differ, so
        # the ttl is not applied (a clock that stands still); idle groups leave when another needs the slot
        self.requests = RequestTracker(cfg, device, self._open_slot, clock=_still if tp_size > 1 else time.monotonic)
        self.tilter = Tilter(cfg.tilt, head, StopCap(stop_ids, cfg.stop_cap, device), cfg.tail_floor,
                             cfg.tilt_entropy, cfg.tilt_max_gain)
        self.used_slots: set[int] = set()
        self.prompt_pending: set[int] = set()  # slots of new groups that have not fitted their prompt yet
        self.active: Step | None = None  # the step whose forward or sampling is under way
        self.tilted_rows = {form.value: 0 for form in TILTED}  # row-steps per form of the tilt
        self.faults: dict[str, int] = {}  # exceptions absorbed, per part of the step
        self.metrics: ESampMetrics | None = None  # set when the scheduler reports Prometheus metrics
        self._last_trace: dict[str, float] = {}
        logger.info(
            "ESamp enabled: %s; %.1f MB per group, %d groups",
            ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()),
            self.bank.bytes_per_group / 2**20, cfg.max_groups,
        )

    def _warm_base(self, saved: SavedBase | None, dtype: torch.dtype) -> WarmBase:
        """The base distiller this server trains, from the saved one if there is one."""
        arch = self.bank.arch.base_arch
        init = saved.params if saved else random_init(arch.shapes(), 1, torch.Generator().manual_seed(self.cfg.seed), self.bank.out_gain)
        warm = WarmBase(arch, self.hidden, self.bank.device, dtype, init, steps=saved.steps if saved else 0,
                        rows=saved.rows if saved else 0, seed=self.cfg.seed)
        if saved:
            logger.info("ESamp: new groups start from the base distiller %s (%d steps on %d rows)", self.store.path,
                        saved.steps, saved.rows)
        else:
            logger.info("ESamp: no base distiller saved for this model yet; new groups start random until the server "
                        "has trained one on %d rows of its traffic (sglang-esamp calibrate --url sends them)", MIN_ROWS)
        return warm

    def _save_base(self, warm: WarmBase) -> None:
        """The base finished its owed steps (in the trainer): save it, at most every
        ``SAVE_EVERY`` seconds."""
        now = time.monotonic()
        if self.store is None or self.tp_rank != 0 or now - self._saved_at < SAVE_EVERY:  # one rank writes the file
            return
        self._saved_at = now
        self.store.save(warm)
        self._saved_steps = warm.steps
        logger.info("ESamp: base distiller saved to %s (%d steps on %d rows, rel_err %.3f)", self.store.path, warm.steps,
                    warm.rows, float(warm.rel_err))

    def idle(self) -> bool:
        """The scheduler has nothing to run: train the base for a slice. True if it did (the
        scheduler then skips its idle sleep)."""
        try:  # tensor parallel: a fixed count, so that every rank's base takes the same steps at the same point
            return self.trainer.idle(IDLE_SLICE, steps=TP_IDLE_STEPS if self.tp_size > 1 else None)
        except Exception:
            self._fault("base", [])
            return False

    @classmethod
    def from_runner(cls, runner, cfg: ESampConfig) -> ESampRuntime:
        """Check that ESamp can run on this model runner, turn on the capture of the source
        layer's output, find where its base is saved (``calibrated`` inits), and build."""
        from sglang.srt.runtime_context import get_parallel

        from .flags import check_server_args

        check_server_args(runner.server_args, cfg)  # the engine does not pass prepare_server_args
        tp_size = get_parallel().tp_size
        model = runner.model
        if not hasattr(model, "set_eagle3_layers_to_capture"):
            raise ValueError(f"ESamp needs hidden-state capture, which {type(model).__name__} does not support")
        num_layers = model.config.num_hidden_layers
        if cfg.source_layer >= num_layers - 1:
            raise ValueError(f"--esamp-source-layer must be below {num_layers - 1} for this model; got {cfg.source_layer}")
        model.set_eagle3_layers_to_capture([cfg.source_layer])
        hidden = model.config.hidden_size
        mc = runner.model_config
        store = BaseStore.for_model(mc.model_path, cfg, hidden, getattr(mc, "revision", None)) if cfg.calibrated else None
        norm = getattr(getattr(model, "model", None), "norm", None)
        processor = model.logits_processor
        weight, bias = model.lm_head.weight, getattr(model.lm_head, "bias", None)
        if tp_size > 1:  # each rank holds a vocabulary shard of the head; the tilt needs all of it
            from sglang.srt.distributed import tensor_model_parallel_all_gather

            weight = tensor_model_parallel_all_gather(weight.detach(), dim=0)  # (V, D), once, at start
            bias = None if bias is None else tensor_model_parallel_all_gather(bias.detach(), dim=0)
        head = Head(weight, bias, processor.logit_scale, processor.final_logit_softcapping,
                    rows_dot.usable(weight)).sliced(runner.model_config.vocab_size)
        return cls(
            cfg, hidden, head, norm_gain(norm), runner.device, sorted(getattr(runner.model_config, "hf_eos_token_id", None) or []),
            store=store, dtype=model.lm_head.weight.dtype, processor=processor, tp_rank=get_parallel().tp_rank if tp_size > 1 else 0,
            tp_size=tp_size,
        )

    # ---- requests (host only) ----

    def _open_slot(self, slot: int) -> None:
        """A new group moves into ``slot``: fresh weights, counters and (with the prompt
        inits) a pending prompt fit."""
        if slot in self.used_slots:
            self.trainer.retire(slot)  # no step of the slot's last group may train after the reset
        self.bank.reset([slot])
        self.stats.clear([slot])
        self.used_slots.add(slot)
        if self.cfg.prompt_fit:
            self.prompt_pending.add(slot)

    def attach(self, req) -> None:
        self.requests.attach(req)

    def finish(self, req, with_metadata: bool) -> None:
        state = self.requests.release(req)
        if state is not None and with_metadata:
            try:
                meta = self.requests.metadata(state, self.stats)
            except Exception:
                self._fault("metadata", [])
                return
            req.customized_info = dict(req.customized_info or {}) | {"esamp": [meta]}
            if self.metrics is not None:
                self.metrics.observe_rel_err(meta.get("rel_err"))
        if state is not None and self.metrics is not None:
            self.publish_metrics(force=self.requests.table.live == 0)  # an idle server's gauges end at 0

    def publish_metrics(self, force: bool = False) -> None:
        """Hand the counts to the Prometheus series (rate-limited unless ``force``)."""
        if self.metrics is None or not self.metrics.due(force):
            return
        try:
            self.metrics.update(self.server_stats(settle=False), self.trainer.take_step_seconds())
        except Exception:
            self._fault("metrics", [])

    def _fault(self, kind: str, slots: list[int]) -> None:
        """Something ESamp does for a step raised: count it, log it (with the traceback at most
        every ``TRACE_EVERY`` seconds per kind), re-initialise the groups it touched. The
        caller then lets SGLang go on as if ESamp were off for these rows."""
        self.faults[kind] = self.faults.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last_trace.get(kind, -float("inf")) >= TRACE_EVERY:
            self._last_trace[kind] = now
            logger.exception("ESamp %s failed (%d so far); its rows sample untilted", kind, self.faults[kind])
        else:
            logger.warning("ESamp %s failed (%d so far); its rows sample untilted", kind, self.faults[kind])
        if slots:
            try:
                self.trainer.drain()  # no queued step may write the slots after their reset
                self.bank.reset(slots)
                self.stats.note_reset(slots)
            except Exception:
                logger.exception("ESamp could not re-initialise slots %s", slots)

    def new_step(self, reqs) -> Step | None:
        """The Step of a new batch (ForwardBatch.init_new), after giving denied requests of
        the batch a slot if one has freed."""
        try:
            for req in reqs:
                state = getattr(req, "esamp", None)
                if state is not None and state.slot is None:
                    self.requests.retry(state)
            return Step.of(reqs)
        except Exception:
            self._fault("batch setup", [])
            return None

    def server_stats(self, settle: bool = True) -> dict:
        """The counters. ``settle`` (the server-info request, which every rank serves at the same
        point of its step sequence) first frees expired groups and, under tensor parallelism,
        drains the trainer for the ranks' digests; without it (the metrics, which one rank
        alone publishes) nothing of the distillers' state changes."""
        table = self.requests.table
        if settle:
            table.expire()
        return {
            "live_groups": table.live,
            "held_slots": len(table.entries),
            "max_groups": self.cfg.max_groups,
            "steps_submitted": self.trainer.submitted,
            "steps_finished": self.trainer.finished,
            "skipped_steps": self.stats.total_skipped,
            "resets": self.stats.total_resets,
            "evictions": table.evictions,
            "denied_groups": table.denied,
            "rejected_requests": self.requests.rejected,
            "trainer_failures": self.trainer.failures,
            "staleness_waits": self.trainer.waits,
            "faults": dict(self.faults),
            "bytes_per_group": self.bank.bytes_per_group,
            "device_bytes": held_bytes(self),
            "base": self._base_stats(),
            "tilted_rows": dict(self.tilted_rows),
            "tp": self._tp_stats() if settle else None,
            "config": dataclasses.asdict(self.cfg),
        }

    def _tp_stats(self) -> dict | None:
        """Tensor parallel: this rank's distillers in one number (every rank reads the request
        for the server info, and logs this; equal digests mean the ranks tilt alike). None
        with one rank. It waits for the trainer: a host sync, on this control path only."""
        if self.tp_size == 1:
            return None
        self.trainer.drain()
        digest = sum(float(v.double().sum()) for v in self.bank.params.values())  # (G, ...) each, all slots
        base = None if self.warm is None else sum(float(v.detach().double().sum()) for v in self.warm.params.values())
        stats = {"rank": self.tp_rank, "size": self.tp_size, "steps": self.trainer.finished, "digest": digest,
                 "base_steps": None if self.warm is None else self.warm.steps, "base_digest": base,
                 "traced_steps": self.trace.steps}
        self.trace.dump(self.tp_rank)
        logger.info("ESamp tensor-parallel rank %d of %d: %d steps, distiller digest %.12e, base %s steps, digest %s",
                    self.tp_rank, self.tp_size, stats["steps"], digest, stats["base_steps"],
                    "-" if base is None else f"{base:.12e}")
        return stats

    def _base_stats(self) -> dict | None:
        warm = self.warm
        if warm is None:
            return None
        return {"steps": warm.steps, "owed": warm.owed, "rows": warm.rows, "fitted": warm.fitted,
                "failures": self.trainer.base_failures, "path": str(self.store.path) if self.store else None,
                "saved_steps": self._saved_steps}

    # ---- one forward ----

    @contextlib.contextmanager
    def forward(self, forward_batch):
        """The step of ``forward_batch`` is active while the model runs (the eager runner hands
        the model a copy of the batch, without the step)."""
        step: Step | None = getattr(forward_batch, "esamp", None)
        if step is not None:
            step.extend_lens = getattr(forward_batch, "extend_seq_lens_cpu", None)
            step.prefix_lens = getattr(forward_batch, "extend_prefix_lens_cpu", None)
        self.active = step
        try:
            yield
        finally:
            self.active = None

    def store_hidden_states(self, processor, stored, hidden_states, aux_hidden_states, pruned_states, sample_indices, metadata):
        """What SGLang keeps of this forward's hidden states: ``stored`` (rows, D), the source
        layer's output, widened to (rows, 2D) with the LM head's input. On the way, fit new
        groups on their prompt (prefill)."""
        if processor is not self.processor or stored is None or not metadata.capture_hidden_mode.is_last():
            return stored
        step = self.active
        if step is not None and self.prompt_pending and aux_hidden_states is not None and metadata.forward_mode.is_extend():
            from sglang.srt.layers.aux_hidden_states import pack_aux_hidden_states

            try:
                self.fit_prompts(step, pack_aux_hidden_states(aux_hidden_states), hidden_states)  # every prefilled token
            except Exception:
                self._fault("prompt fit", [])
        final = pruned_states[sample_indices] if sample_indices is not None else pruned_states  # (rows, D)
        return torch.cat([stored, final.to(stored.dtype)], dim=-1)

    def fit_prompts(self, step: Step, h1: torch.Tensor, h: torch.Tensor) -> None:
        """Queue ``prompt_steps`` training steps for every group of the batch that has not
        fitted its prompt yet, on its requests' prefilled tokens (the last ``PROMPT_ROWS`` of
        each; not a sequence's first token, which no decode step resembles). Under chunked
        prefill a prompt fits on its final chunk, the tokens nearest its first decode step.
        h1, h: (tokens, D), every token of the batch."""
        lens = step.extend_lens
        starts = step.prefix_lens or [1] * len(lens or ())
        if lens is None or len(lens) != len(step.reqs) or sum(lens) != h.shape[0]:
            return
        rows, row_slots, offset, taken = [], [], 0, {}
        for req, state, n, start in zip(step.reqs, step.states, lens, starts):
            slot = -1 if state is None else state.live_slot
            last_chunk = start + n >= len(getattr(req, "origin_input_ids", None) or ())  # chunked prefill: its final part
            if slot in self.prompt_pending and last_chunk:
                budget = PROMPT_ROWS - taken.get(slot, 0)  # the bound is per group, whatever its requests
                first = offset + max(n - budget, 1 if start == 0 else 0)
                rows += range(first, offset + n)
                row_slots += [slot] * (offset + n - first)
                taken[slot] = taken.get(slot, 0) + offset + n - first
            offset += n
        if not rows:
            return
        self.prompt_pending -= set(row_slots)
        idx = torch.tensor(rows, dtype=torch.int64).to(h.device, non_blocking=True)
        layout = BatchLayout.from_slots(row_slots, h.device)
        src, tgt = h1[idx], h[idx]  # (rows, D) each
        self.trainer.submit(layout, src, tgt, repeat=self.cfg.prompt_steps)

    def _plan(self, step: Step, layout):
        shared = shared_rows(step.states, step.reqs) if self.cfg.shared_prefix_tilt == "off" else frozenset()
        return plan_rows(step.states, [r.sampling_params for r in step.reqs], layout, self.cfg, self.tilter.vocab, shared)

    # ---- sampling ----

    def sample(self, sample_fn, logits_output, forward_batch):
        """Tilt and sample one batch, then queue its training step. ``sample_fn(lo, fb)`` is
        SGLang's sample, which calls back ``apply_tilt`` once its penalties, grammar mask and
        logit bias are in. Returns its token ids."""
        step: Step | None = getattr(forward_batch, "esamp", None)
        captured = logits_output.hidden_states
        if step is None or captured is None or captured.shape[-1] != 2 * self.hidden:
            return sample_fn(logits_output, forward_batch)
        h1, h = captured[:, : self.hidden], captured[:, self.hidden :]  # (rows, D) each
        logits_output.hidden_states = h1  # what SGLang itself captures in this mode
        info = forward_batch.sampling_info
        try:
            sample_info = self._before_sampling(step, h1, h, info, forward_batch, logits_output.next_token_logits)
        except Exception:  # this step samples plainly and trains nothing
            step.clear()
            self._fault("prediction", list(step.layout.slot_list) if step.layout is not None else [])
            return sample_fn(logits_output, forward_batch)
        forward_batch.sampling_info = sample_info
        outer, self.active = self.active, step
        try:
            ids = sample_fn(logits_output, forward_batch)
        finally:
            self.active = outer
            if forward_batch.sampling_info is not info:
                info.grammar_mask = forward_batch.sampling_info.grammar_mask  # SGLang frees it after use
                forward_batch.sampling_info = info
            step.clear()
        if forward_batch.forward_mode.is_decode():
            try:
                self.trainer.submit(step.train_layout(h1.device), h1, h)
            except Exception:
                self._fault("training", list(step.layout.slot_list))
        self.publish_metrics()
        return ids

    def _before_sampling(self, step: Step, h1, h, info, forward_batch, logits: torch.Tensor):
        """Predict and plan the step, record novelty, keep what the tilt needs for
        ``apply_tilt``; the SamplingBatchInfo to sample with. logits: (rows, V), the model's
        own, not yet processed by SGLang."""
        layout = step.batch_layout(h1.device)
        step.h_hat, step.plan = self.trainer.predict(layout, h1), self._plan(step, layout)
        if self.trace is not None:
            self.trace.predictions(step.h_hat)
        plan = step.plan
        self.requests.record_novelty(step.states, plan.layout, h, step.h_hat)
        for form in TILTED:
            self.tilted_rows[form.value] += len(plan.rows(form))
        h_hat = step.h_hat
        if self.cfg.tilt_center == "group":
            h_hat = center_on_group(h[layout.rows], h_hat, layout.row_group, layout.num_groups)
        step.tilt_pending = self.tilter.capture(plan, h, h_hat, logits, info, forward_batch)
        return sampling_params_for(plan, info, logits.shape[-1])

    def draw(self, sample, probs: torch.Tensor, info, positions, simple: bool) -> tuple:
        """SGLang's draw (``sample``, its ``Sampler._sample_from_probs`` bound to the sampler),
        with the stratified rows of the active step taking their codes' tokens
        (``strata.py``). probs: (rows, V) after temperature; ``simple``: no row has
        top-k/top-p/min-p. When every row is stratified and SGLang captures no sampling mask,
        its own draw would be overwritten whole and is not made: the codes draw every row (on
        a CPU, SGLang's multinomial over the vocabulary is a sixth of a decode step). If the
        codes fail, the rows keep SGLang's draw."""
        step = self.active
        rows = self._strata_rows(step) if step is not None else ()
        if rows and len(rows[0]) == probs.shape[0] and getattr(info, "sampling_mask_batch_indices", None) is None:
            ids = torch.empty(probs.shape[0], dtype=torch.int32, device=probs.device)  # (rows,), every one written
            if self._resample(ids, probs, info, rows, not simple):
                return self._traced(ids), None
        ids, capture = sample(probs, info, positions, simple)
        if rows:
            self._resample(ids, probs, info, rows, not simple)
        return (self._traced(ids) if step is not None else ids), capture

    def _traced(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``, the step's (rows,) draws, recorded in the TP trace: this rank's own, before
        SGLang reconciles the ranks."""
        if self.trace is not None:
            self.trace.tokens(ids)
        return ids

    def _strata_rows(self, step: Step) -> tuple:
        """The step's (batch rows, table rows) of stratified rows, read once per step; () if none
        (or if reading them failed: the rows keep SGLang's draw)."""
        if step.strata_rows is None:
            try:
                step.strata_rows = self.requests.strata.rows_of(step) or ()
            except Exception:
                step.strata_rows = ()
                self._fault("strata", [])
        return step.strata_rows

    def _resample(self, ids: torch.Tensor, probs: torch.Tensor, info, rows: tuple, filtered: bool) -> bool:
        """The codes' tokens into (rows,) ``ids`` in place; False (counted as a fault) if they failed."""
        try:
            self.requests.strata.resample(ids, probs, info, rows, filtered)
        except Exception:
            self._fault("strata", [])
            return False
        return True

    def apply_tilt(self, logits_output) -> None:
        """Tilt the DENSE and CANDIDATES rows in place, after SGLang's penalties, grammar and
        logit bias, so that candidate sets are those its filters would keep from these very logits."""
        step = self.active
        if step is None or step.tilt_pending is None:
            return
        pending, step.tilt_pending = step.tilt_pending, None
        try:
            self.tilter.after_processing(pending, logits_output.next_token_logits)
        except Exception:  # the rows keep their logits; their own filters are back for the sampler
            pending.info.grammar_mask = None  # applied already, as SGLang frees it
            pending.forward_batch.sampling_info = pending.info
            self._fault("tilt", [])
