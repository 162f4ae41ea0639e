"""sglang-esamp: Exploratory Sampling for SGLang.

Parallel samples of one prompt share an online-trained distiller that predicts the model's
deep hidden state from a shallow one; each token's logit is tilted away from what the
distiller already predicts, so the samples spread over different continuations.

Importing the package also teaches SGLang's frontend ``sgl.gen(..., explore=beta)``
(see ``frontend.py``).

Usage::

    import sglang as sgl
    import sglang_esamp
    sgl.gen("answer", max_tokens=64, explore=0.25)
    cfg = sglang_esamp.ESampConfig(max_groups=16)
"""

from . import cpu

cpu.setup()  # before sglang is first imported, on machines without a GPU

from . import frontend  # noqa: E402
from .core.config import ESampConfig  # noqa: E402

frontend.install()
gen = frontend.gen

__all__ = ["ESampConfig", "gen"]
__version__ = "0.1.0"
