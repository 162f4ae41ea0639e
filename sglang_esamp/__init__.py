"""sglang-esamp: Exploratory Sampling for SGLang.

Parallel samples of one prompt share an online-trained distiller that predicts the model's
deep hidden state from a shallow one; each token's logit is tilted away from what the
distiller already predicts, so the samples spread over different continuations.

Usage::

    from sglang_esamp import ESampConfig
"""

from .core.config import ESampConfig

__all__ = ["ESampConfig"]
__version__ = "0.1.0"
