"""Where sglang-esamp keeps what it builds once (the embedded model, calibrated bases):
``$SGLANG_ESAMP_CACHE``, or ``~/.cache/sglang_esamp``."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SGLANG_ESAMP_CACHE"


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "sglang_esamp"
