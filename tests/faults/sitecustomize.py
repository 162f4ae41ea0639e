"""Test-only fault injection into a real server's scheduler process.

Every Python process whose ``PYTHONPATH`` starts with this folder imports it at start (the
``sitecustomize`` mechanism); with ``ESAMP_FAULTS`` naming a JSON file, it wraps the
distiller bank so that each fault listed in the file fires once, on the next call that
reaches it, and is removed from the file. Faults: ``train_raise`` (a training step raises,
as an out-of-memory error would), ``predict_raise`` (a prediction raises), ``nan_distiller``
(the predicting groups' weights turn NaN), ``strata_raise`` (a stratified draw raises).
"""

import fcntl
import json
import os

FAULTS = os.environ.get("ESAMP_FAULTS")


def take(name: str) -> bool:
    """Consume one armed fault ``name``; False when it is not armed."""
    with open(FAULTS + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(FAULTS) as f:
                armed = json.load(f)
        except (OSError, ValueError):
            return False
        if name not in armed:
            return False
        armed.remove(name)
        with open(FAULTS, "w") as f:
            json.dump(armed, f)
        return True


def patch_bank(module) -> None:
    bank_cls = module.DistillerBank
    train_step, predict = bank_cls.train_step, bank_cls.predict

    def faulty_train_step(self, *args, **kwargs):
        if take("train_raise"):
            raise RuntimeError("injected fault: CUDA out of memory in the distiller step")
        return train_step(self, *args, **kwargs)

    def faulty_predict(self, layout, src):
        if take("predict_raise"):
            raise RuntimeError("injected fault: prediction failed")
        if take("nan_distiller"):
            with self.lock:
                for weights in self.params.values():
                    weights.index_fill_(0, layout.slots, float("nan"))
        return predict(self, layout, src)

    bank_cls.train_step, bank_cls.predict = faulty_train_step, faulty_predict


def patch_strata(module) -> None:
    pick = module.Strata.pick

    def faulty_pick(self, *args, **kwargs):
        if take("strata_raise"):
            raise RuntimeError("injected fault: stratified draw failed")
        return pick(self, *args, **kwargs)

    module.Strata.pick = faulty_pick


if FAULTS:
    import wrapt

    wrapt.register_post_import_hook(patch_bank, "sglang_esamp.core.bank")
    wrapt.register_post_import_hook(patch_strata, "sglang_esamp.core.strata")
