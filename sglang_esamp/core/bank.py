"""DistillerBank: G independent distillers in stacked tensors, with a per-group optimizer.

Slot s owns row s of every weight and optimizer-state tensor. A batch works on views of
the bank's rows for the slot ranges its groups span (``BatchLayout.split`` cuts them where
idle slots would pad more than the rows, and ``window`` gives each range): predictions read them, and a
training step updates them in place, with no gather and no scatter. A slot of the range
that is not in the batch gets a step that leaves it exactly as it was, so one group's
update can never write another group's row. A reader never sees half of an update: the
step holds the bank's lock, and on CUDA ``fences.py`` orders reads and writes across the
streams that issue them.

Per group, a training step is the paper's: loss = mean over the group's rows of
||h_L - f(h_1)||^2, Adam (betas 0.9/0.999, eps ``adam_eps``), the gradient clipped to global
norm ``grad_clip`` within the group. ``--esamp-optimizer sgd`` replaces Adam by plain SGD on
the clipped gradient and holds no moments. A group whose loss or gradient is not finite
keeps its old weights and is reported in ``TrainResult.ok``. The update reads no value on
the host: its per-slot coefficients are device tensors.

Usage::

    bank = DistillerBank(cfg, hidden=576)
    layout = BatchLayout.from_slots([0, 0, 1])
    pred = bank.predict(layout, h1)          # (3, 576)
    res = bank.train_step(layout, h1, hL)    # TrainResult with per-group loss and ok
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import torch

from .config import ESampConfig
from .distiller import BASE, Params, TailDistiller, build_architecture, random_init, rms_norm
from .fences import StreamFences
from .layout import BatchLayout
from .streams import CudaStreams

_BETA1, _BETA2 = 0.9, 0.999


@dataclass(frozen=True)
class TrainResult:
    slot_list: tuple[int, ...]  # the groups' slots on the host, in the order of every tensor below
    slots: torch.Tensor  # (g,) int64
    loss: torch.Tensor  # (g,) mean squared error before the update
    rel_err: torch.Tensor  # (g,) sum ||h - f||^2 / sum ||h||^2 before the update
    novelty: torch.Tensor  # (g,) mean ||h - f|| before the update
    ok: torch.Tensor  # (g,) bool: the step was applied


class DistillerBank:
    def __init__(
        self,
        cfg: ESampConfig,
        hidden: int,
        device: torch.device | str = "cpu",
        out_gain: torch.Tensor | None = None,
        base: Params | None = None,
        streams=None,
    ):
        """``streams``: the stream API (default: CUDA's on a CUDA device, none elsewhere)."""
        self.cfg = cfg
        self.hidden = hidden
        self.device = torch.device(device)
        self.arch = build_architecture(cfg.distiller, hidden, cfg.intermediate, cfg.rank, cfg.tail_units or None)
        home = self.device if self.device.type != "meta" else torch.device("cpu")  # where fresh weights are made
        self.out_gain = None if out_gain is None else out_gain.detach().float().to(home)
        self.generator = torch.Generator(device=home).manual_seed(cfg.seed)
        self.lock = threading.Lock()
        self.streams = CudaStreams.for_device(self.device) if streams is None else streams
        self.fences = StreamFences(self.streams)  # reads and writes ordered across streams
        if base is None and getattr(self.arch, "needs_base", False):  # until the server's own: a random one
            base = random_init(self.arch.base_arch.shapes(), 1, self.generator, self.out_gain)
        self.base = None if base is None else self._check_base(base)  # name -> (1, ...): warm start
        g = cfg.max_groups
        init = self._fresh(g)
        self.params: Params = {k: v.to(self.device) for k, v in init.items()}  # (G, ...)
        adam = cfg.optimizer == "adam"
        self.exp_avg: Params = {k: torch.zeros_like(v) for k, v in self.params.items()} if adam else {}
        self.exp_avg_sq: Params = {k: torch.zeros_like(v) for k, v in self.params.items()} if adam else {}
        self.step_count = torch.zeros(g, device=self.device)  # (G,) optimizer steps per slot

    @property
    def bytes_per_group(self) -> int:
        """Weights plus the optimizer's moments (Adam: two), fp32, and the step count."""
        per = sum(v[0].numel() for v in self.params.values())
        return self.cfg.state_copies * per * 4 + 4

    def _check_base(self, base: Params) -> Params:
        shapes = self.arch.base_arch.shapes()
        got = {k: tuple(v.shape[1:]) for k, v in base.items()}
        if got != shapes or any(v.shape[0] != 1 for v in base.values()):
            raise ValueError(f"base distiller does not fit this architecture: expected {shapes}, got {got}")
        return {k: v.detach().float().to(self.device) for k, v in base.items()}  # kept where the slots live

    def set_base(self, base: Params) -> None:
        """From now on new groups start from ``base`` (name -> (1, ...), owned by the bank from
        here on); slots in use keep their weights (with the adapter, which runs on the base,
        their predictions follow the new base from the next step). Callable from the trainer's
        thread and stream."""
        checked = self._check_base(base)
        with self.lock:
            self.fences.before_write()
            self.base = checked
            self.fences.after_write()

    def _fresh(self, g: int) -> Params:
        """(g, ...) initial weights: copies of the base when there is one (an adapter: a fresh
        block, with the base's output gain), else the paper's random init (on the meta device,
        shapes only: the cost estimate's bank)."""
        if self.device.type == "meta":
            return {k: torch.empty(g, *shape, device=self.device) for k, shape in self.arch.shapes().items()}
        gain, copies = self.out_gain, None
        with self.lock:
            base = self.base
            if base is not None:
                self.fences.before_read()
                self.fences.hand_over(base.values())  # made on the trainer's stream, read here
                if self.shares_base:
                    gain = base["out_gain"][0].clone()
                else:
                    copies = {k: v.expand(g, *v.shape[1:]).clone() for k, v in base.items()}
                self.fences.after_read()
        return copies if copies is not None else random_init(self.arch.shapes(), g, self.generator, gain, self.arch.zero_init)

    @property
    def shares_base(self) -> bool:
        """The groups run on one shared base (the adapter) rather than start from copies of it."""
        return self.arch.base_arch is not self.arch

    def _shared(self) -> Params:
        """The shared base's weights under ``base.`` names, for the forward (under the lock,
        between the fences); empty without a base or for an architecture that copies it."""
        if not self.shares_base or self.base is None:
            return {}
        self.fences.hand_over(self.base.values())  # made on the trainer's stream, read on this one
        return {BASE + k: v for k, v in self.base.items()}

    def reset(self, slots: list[int]) -> None:
        """Give these slots initial weights and a fresh optimizer (a new group moves in)."""
        if not slots:
            return
        fresh = self._fresh(len(slots))
        idx = torch.tensor(slots, dtype=torch.int64, device=self.device)
        with self.lock:
            self.fences.before_write()  # after the step still in flight for these slots
            for k in self.params:
                self.params[k].index_copy_(0, idx, fresh[k])
            for moment in (*self.exp_avg.values(), *self.exp_avg_sq.values()):
                moment.index_fill_(0, idx, 0.0)
            self.step_count.index_fill_(0, idx, 0.0)
            self.fences.after_write()

    def read(self, slots: torch.Tensor) -> tuple[Params, torch.Tensor]:
        """A consistent private copy of these slots' weights and their step counts."""
        with self.lock:
            self.fences.before_read()
            out = {k: v.index_select(0, slots) for k, v in self.params.items()}, self.step_count.index_select(0, slots)
            self.fences.after_read()
            return out

    def _views(self, window) -> tuple[Params, Params, Params, torch.Tensor]:
        """The bank's own rows for the window's slot range: views, not copies."""
        lo, hi = window.lo, window.hi
        params, exp_avg, exp_avg_sq = ({k: v[lo:hi] for k, v in bank.items()} for bank in (self.params, self.exp_avg, self.exp_avg_sq))
        return params, exp_avg, exp_avg_sq, self.step_count[lo:hi]

    @torch.no_grad()
    def predict(self, layout: BatchLayout, src: torch.Tensor) -> torch.Tensor:
        """src (num_rows, D) -> predicted deep states (M, D) for ``layout.rows``, one packed
        forward per bucket of group sizes (``BatchLayout.split``), on the bank's rows of the
        bucket's slot range (``BatchLayout.window``)."""
        if layout.is_empty:
            return src.new_zeros(0, self.hidden)
        out = None
        for part, positions in layout.split:
            win = part.window
            with self.lock:
                self.fences.before_read()
                params = self._views(win)[0] | self._shared()
                pred = win.layout.unpack(self.arch.forward(params, win.layout.pack(src.float())))  # (m, D)
                self.fences.after_read()
            if positions is None:
                return pred.to(src.dtype)
            out = src.new_empty(len(layout.row_list), self.hidden) if out is None else out
            out[positions] = pred.to(src.dtype)
        return out

    def train_step(self, layout: BatchLayout, src: torch.Tensor, tgt: torch.Tensor) -> TrainResult | None:
        """One optimizer step for every group in the layout, on all of its rows (one packed
        step per bucket of group sizes; every group is in exactly one)."""
        if layout.is_empty:
            return None
        results = [self._train_part(part, src, tgt) for part, _ in layout.split]  # bucket order, not slot_list's
        if len(results) == 1:
            return results[0]
        columns = {f.name: [getattr(r, f.name) for r in results] for f in dataclasses.fields(TrainResult)}
        return TrainResult(sum(columns.pop("slot_list"), ()), **{k: torch.cat(v) for k, v in columns.items()})

    def _train_part(self, layout: BatchLayout, src: torch.Tensor, tgt: torch.Tensor) -> TrainResult:
        """The step runs on views of the bank's rows for the part's slot range and updates them
        in place: no gather, no scatter. Slots of the range outside the part have no rows, and
        their step is a no-op, like a failed group's. The lock
        spans the step, so a reader sees every slot before or after it, never in between."""
        win = layout.window
        x, y = win.layout.pack(src.float()), win.layout.pack(tgt.float())  # (w, R, D)
        mask = win.layout.mask()  # (w, R)
        with self.lock:
            self.fences.before_write()
            params, exp_avg, exp_avg_sq, steps = self._views(win)
            if self.factored:
                sq, loss, ok = self._tail_sgd(params, steps, x, y, mask, win.layout.group_rows)
            else:
                leaves = {k: v.detach().requires_grad_() for k, v in params.items()}  # same storage
                with torch.enable_grad():
                    sq = (self.arch.forward(leaves | self._shared(), x) - y).pow(2).sum(-1) * mask  # (w, R)
                    loss = sq.sum(-1) / win.layout.group_rows.clamp_min(1.0)  # (w,) 0 for an empty block
                    grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
                sq = sq.detach()
                loss = loss.detach()
                norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=-1) for g in grads])  # (tensors, w)
                ok, clip = self._verdict(loss, torch.linalg.vector_norm(norms, dim=0), win.layout.group_rows)
                if self.cfg.optimizer == "adam":
                    self._adam(params, exp_avg, exp_avg_sq, steps, grads, clip, ok)
                else:
                    self._sgd(params, steps, grads, clip, ok)
            self.fences.after_write()
        live = win.live
        rel_err = sq.sum(-1) / (y.pow(2).sum(-1) * mask).sum(-1).clamp_min(1e-12)
        novelty = (sq.sqrt() * mask).sum(-1) / win.layout.group_rows
        return TrainResult(layout.slot_list, layout.slots, loss[live], rel_err[live], novelty[live], ok[live])

    def _verdict(self, loss: torch.Tensor, grad_norm: torch.Tensor, group_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ok, clip), each (w,): the step is applied where it is finite and has rows; clip scales
        the gradient to global norm at most ``grad_clip``."""
        ok = torch.isfinite(loss) & torch.isfinite(grad_norm) & (group_rows > 0)
        return ok, (self.cfg.grad_clip / (grad_norm + 1e-6)).clamp(max=1.0)

    @property
    def factored(self) -> bool:
        """The tail with SGD trains without its delta's gradient ever written (``_tail_sgd``)."""
        return isinstance(self.arch, TailDistiller) and self.cfg.optimizer == "sgd"

    def _tail_sgd(self, params: Params, steps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                  group_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tail's SGD step with its delta's gradient left as the product it is: with a the
        delta's input (w, R, u) and e the loss's gradient at the stream (w, R, D), the gradient
        is a^T e, its squared norm sum((a a^T) * (e e^T)) (R x R Gram matrices), and the update
        one batched a^T e' added in place, e' being e times each slot's -lr * clip. The delta
        is read once and written once; no (w, u, D) tensor is made. Returns (sq, loss, ok)."""
        with torch.no_grad():
            act, z = self.arch.stream(params | self._shared(), x)  # (w, R, u), (w, R, D)
        z.requires_grad_()
        gain = params["out_gain"].detach().requires_grad_()  # (w, D), the bank's storage
        with torch.enable_grad():
            sq = (rms_norm(z) * gain.unsqueeze(1) - y).pow(2).sum(-1) * mask  # (w, R)
            loss = sq.sum(-1) / group_rows.clamp_min(1.0)  # (w,)
            g_gain, g_z = torch.autograd.grad(loss.sum(), [gain, z])
        with torch.no_grad():
            down_sq = (torch.bmm(act, act.transpose(1, 2)) * torch.bmm(g_z, g_z.transpose(1, 2))).sum((1, 2))  # (w,)
            ok, clip = self._verdict(loss, (g_gain.pow(2).sum(-1) + down_sq).sqrt(), group_rows)
            rate = torch.where(ok, clip, torch.zeros_like(clip)) * -self.cfg.sgd_lr  # (w,), 0 where not ok
            params["out_gain"].addcmul_(torch.nan_to_num_(g_gain), rate.unsqueeze(1))
            step = torch.nan_to_num_(g_z).mul_(rate.view(-1, 1, 1))  # (w, R, D)
            params["down"].baddbmm_(torch.nan_to_num(act).transpose(1, 2), step)
            steps.copy_(torch.where(ok, steps + 1, steps))
        return sq.detach(), loss.detach(), ok

    @torch.no_grad()
    def _adam(self, params: Params, exp_avg: Params, exp_avg_sq: Params, steps: torch.Tensor, grads, clip, ok) -> None:
        """Adam on the window's rows, in place. A slot whose step is not finite (or that has no
        rows) gets coefficients that leave its weights, moments and step count as they were,
        so no select over the rows is needed."""
        t = steps + 1  # (w,)
        okf = ok.to(t.dtype)
        bias2_sqrt = (1 - _BETA2**t).sqrt()
        step = self.cfg.lr / (1 - _BETA1**t) * bias2_sqrt * okf  # (w,) lr * bias corrections, 0 where not ok
        m_weight = (1 - _BETA1) * okf  # (w,) m moves this share towards the gradient
        decay2 = torch.where(ok, torch.full_like(t, _BETA2), torch.ones_like(t))
        scale = torch.where(ok, clip, torch.zeros_like(clip))  # (w,) clip factor, 0 where not ok
        eps = self.cfg.adam_eps * bias2_sqrt  # (w,) eps on the uncorrected sqrt(v)
        for (name, p), grad in zip(params.items(), grads):
            view = (-1,) + (1,) * (p.dim() - 1)
            grad = torch.nan_to_num_(grad).mul_(scale.view(view))
            m = exp_avg[name].lerp_(grad, m_weight.view(view))
            v = exp_avg_sq[name].mul_(decay2.view(view)).addcmul_(grad, grad, value=1 - _BETA2)
            # p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), written as m / ((sqrt(v) + eps') / step):
            # a slot with step 0 divides by inf and keeps its weights. The gradient's storage, used up, holds the divisor.
            p.addcdiv_(m, torch.sqrt(v, out=grad).add_(eps.view(view)).div_(step.view(view)), value=-1.0)
        steps.copy_(torch.where(ok, t, steps))

    @torch.no_grad()
    def _sgd(self, params: Params, steps: torch.Tensor, grads, clip, ok) -> None:
        """p -= lr * clip * g on the window's rows, in place; a slot that is not ok moves by 0."""
        rate = torch.where(ok, clip, torch.zeros_like(clip)) * -self.cfg.sgd_lr  # (w,)
        for p, grad in zip(params.values(), grads):
            p.addcmul_(torch.nan_to_num_(grad), rate.view((-1,) + (1,) * (p.dim() - 1)))
        steps.copy_(torch.where(ok, steps + 1, steps))
