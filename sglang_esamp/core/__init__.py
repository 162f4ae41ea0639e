"""The ESamp core in plain torch: config, distiller bank, group slots, tilt, trainer.

Nothing here imports sglang; the runtime integration calls into these pieces.
"""

from .bank import DistillerBank, TrainResult
from .config import ESampConfig
from .layout import BatchLayout
from .slots import GroupTable
from .stats import GroupStats
from .tilt import cap_stop_mass, head_gram, mix_hidden, mix_residual, tilt_candidates, tilt_dense, tilt_logits
from .trainer import AsyncTrainer

__all__ = [
    "AsyncTrainer",
    "BatchLayout",
    "DistillerBank",
    "ESampConfig",
    "GroupStats",
    "GroupTable",
    "TrainResult",
    "cap_stop_mass",
    "head_gram",
    "mix_hidden",
    "mix_residual",
    "tilt_candidates",
    "tilt_dense",
    "tilt_logits",
]
