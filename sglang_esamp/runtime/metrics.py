"""ESamp's Prometheus metrics, beside SGLang's own on ``/metrics`` (``--enable-metrics``).

SGLang runs prometheus_client in multiprocess mode: each scheduler writes its series to
files that the HTTP server's ``/metrics`` route reads. ``ESampMetrics`` is created in the
scheduler that reports metrics, with SGLang's labels (model_name, engine_type, tp_rank, ...),
and names every series ``sglang:esamp_*``. prometheus_client is imported here only when the
object is built, after SGLang has set the multiprocess directory.

The runtime keeps its own cumulative counts on the host (``server_stats``); ``update`` turns
them into counter increments (counters only go up) and gauge values, at most once per
``PERIOD`` seconds and whenever a request finishes.

| series | type | what |
| --- | --- | --- |
| ``sglang:esamp_live_groups`` | gauge | groups with a running request |
| ``sglang:esamp_held_slots`` | gauge | distiller slots held (live or idle within the TTL) |
| ``sglang:esamp_denied_groups_total`` | counter | requests denied a slot (every slot busy) |
| ``sglang:esamp_slot_evictions_total`` | counter | idle groups evicted for a new one |
| ``sglang:esamp_group_resets_total`` | counter | distillers re-initialised (non-finite step, or a fault) |
| ``sglang:esamp_faults_total{kind}`` | counter | exceptions absorbed (kind: trainer, prediction, tilt, ...) |
| ``sglang:esamp_rejected_requests_total`` | counter | requests whose ESamp spec the scheduler refused |
| ``sglang:esamp_tilted_row_steps_total{form}`` | counter | row-steps tilted, per form (dense, candidates) |
| ``sglang:esamp_training_steps_total`` | counter | distiller optimizer steps run |
| ``sglang:esamp_staleness_waits_total`` | counter | predictions that waited for the trainer (``--esamp-staleness``) |
| ``sglang:esamp_training_step_seconds`` | histogram | host time of one training step (its issue time on a CUDA side stream) |
| ``sglang:esamp_group_rel_err`` | histogram | a finished request's group distiller, ``||h - h_hat||^2 / ||h||^2`` |
"""

from __future__ import annotations

import time

PERIOD = 1.0  # seconds between two updates from the step path


class ESampMetrics:
    def __init__(self, labels: dict):
        from prometheus_client import Counter, Gauge, Histogram

        self.labels = {k: str(v) for k, v in labels.items()}
        names = list(self.labels)

        def counter(name, doc, extra=()):
            return Counter(f"sglang:esamp_{name}", doc, labelnames=names + list(extra))

        self.live = Gauge("sglang:esamp_live_groups", "Groups with a running request.", labelnames=names,
                          multiprocess_mode="mostrecent")
        self.held = Gauge("sglang:esamp_held_slots", "Distiller slots held (live, or idle within the TTL).", labelnames=names,
                          multiprocess_mode="mostrecent")
        self.counters = {
            "denied_groups": counter("denied_groups_total", "Requests denied a distiller slot because every slot was busy."),
            "evictions": counter("slot_evictions_total", "Idle groups evicted to make room for a new one."),
            "resets": counter("group_resets_total", "Distillers re-initialised after a non-finite step or a fault."),
            "rejected_requests": counter("rejected_requests_total", "Requests whose ESamp spec the scheduler refused."),
            "steps_finished": counter("training_steps_total", "Distiller optimizer steps run."),
            "staleness_waits": counter("staleness_waits_total", "Predictions that waited for the trainer."),
        }
        self.faults = counter("faults_total", "Exceptions absorbed, per part of the step.", ["kind"])
        self.tilted = counter("tilted_row_steps_total", "Row-steps tilted, per form of the tilt.", ["form"])
        self.step_seconds = Histogram("sglang:esamp_training_step_seconds", "Host time of one distiller training step.",
                                      labelnames=names, buckets=(1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0))
        self.rel_err = Histogram("sglang:esamp_group_rel_err", "Relative error of a finished request's group distiller.",
                                 labelnames=names, buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0))
        self._last: dict[tuple, float] = {}
        self._due = 0.0

    def _inc(self, metric, key: tuple, value: float, **extra) -> None:
        delta = value - self._last.get(key, 0.0)
        if delta > 0:
            metric.labels(**self.labels, **extra).inc(delta)
        self._last[key] = value

    def due(self, force: bool = False) -> bool:
        """Whether an update is due now (at most one per ``PERIOD`` unless ``force``)."""
        now = time.monotonic()
        if not force and now < self._due:
            return False
        self._due = now + PERIOD
        return True

    def update(self, stats: dict, step_seconds: list[float]) -> None:
        """Publish the runtime's counts (``ESampRuntime.server_stats``) and the training-step
        times gathered since the last update."""
        self.live.labels(**self.labels).set(stats["live_groups"])
        self.held.labels(**self.labels).set(stats["held_slots"])
        for name, metric in self.counters.items():
            self._inc(metric, (name,), stats[name])
        for kind, count in stats["faults"].items():
            self._inc(self.faults, ("faults", kind), count, kind=kind)
        self._inc(self.faults, ("faults", "trainer"), stats["trainer_failures"], kind="trainer")
        for form, count in stats["tilted_rows"].items():
            self._inc(self.tilted, ("tilted", form), count, form=form)
        hist = self.step_seconds.labels(**self.labels)
        for seconds in step_seconds:
            hist.observe(seconds)

    def observe_rel_err(self, value: float | None) -> None:
        if value is not None:
            self.rel_err.labels(**self.labels).observe(value)
