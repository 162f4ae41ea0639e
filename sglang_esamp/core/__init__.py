"""The ESamp core in plain torch: config, distiller bank, group slots, tilt, trainer.

Nothing here imports sglang; the runtime integration calls into these pieces.
"""

from .bank import DistillerBank, TrainResult
from .config import ESampConfig
from .head import Head, VocabMoments
from .layout import BatchLayout
from .slots import GroupTable
from .stats import GroupStats
from .stop_cap import StopCap
from .strata import Strata
from .tilt import plausible_tilt, tilt_candidates, tilt_dense, tilt_plausible
from .trainer import AsyncTrainer

__all__ = [
    "AsyncTrainer",
    "BatchLayout",
    "DistillerBank",
    "ESampConfig",
    "GroupStats",
    "GroupTable",
    "TrainResult",
    "Head",
    "StopCap",
    "Strata",
    "VocabMoments",
    "tilt_candidates",
    "tilt_dense",
    "plausible_tilt",
    "tilt_plausible",
]
