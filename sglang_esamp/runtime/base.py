"""BaseStore: where a server keeps the base distiller it trains (``--esamp-init calibrated``).

The base is trained by the server itself (``core/warm_base.py``) and saved here, so the
next start on the same model begins with it. A file is keyed by the model's content (its
config and a hash of its weight files, read as bytes: no model is loaded; a hub id's from
the local hub cache), the hidden size,
the distiller's shape, the source layer and the seed. The folder is
``$SGLANG_ESAMP_BASE_DIR``, or ``<cache root>/base``. A file that cannot be read is
reported and ignored: the server then starts its base afresh.

Usage::

    store = BaseStore.for_model(model_path, cfg, hidden=576)
    saved = store.load()          # SavedBase or None
    store.save(warm_base)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..core.config import ESampConfig
from ..core.distiller import Params
from ..core.warm_base import WarmBase
from .cache import cache_root

logger = logging.getLogger(__name__)

DIR_ENV = "SGLANG_ESAMP_BASE_DIR"
VERSION = 2  # bump when the base's recipe changes, so older files are not used
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
FULL_HASH_BYTES = 2**30  # hash every byte of models up to this size (about half a second per GiB)
SAMPLES, SAMPLE_BYTES = 64, 2**16  # larger models: 64 reads of 64 KiB per file


@dataclass
class SavedBase:
    params: Params  # name -> (1, ...), float32, CPU
    steps: int  # training steps behind it
    rows: int  # rows it has drawn from
    rel_err: float  # of its last minibatch


def weights_digest(root: Path) -> str:
    """A hash of the model's weight files by content: all their bytes when they total at most
    ``FULL_HASH_BYTES``; otherwise each file's safetensors header (tensor names, shapes,
    dtypes, offsets, metadata) and ``SAMPLES`` evenly spread reads of ``SAMPLE_BYTES``. A
    fine-tuned checkpoint with the same name and shapes differs in nearly every sample."""
    files = sorted(p for pattern in WEIGHT_FILES for p in root.glob(pattern))
    full = sum(p.stat().st_size for p in files) <= FULL_HASH_BYTES
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            if full:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
                continue
            if path.suffix == ".safetensors":
                header = int.from_bytes(f.read(8), "little")
                digest.update(f.read(min(header, 1 << 26)))
            for k in range(SAMPLES):
                f.seek(max(0, (size - SAMPLE_BYTES) * k // (SAMPLES - 1)))
                digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def local_folder(model_path: str, revision: str | None = None) -> Path | None:
    """The folder that holds a model: ``model_path`` itself, or a hub id's snapshot in the
    local hub cache (no download is attempted); None if neither."""
    root = Path(model_path).expanduser()
    if root.is_dir():
        return root.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_path, revision=revision, local_files_only=True))
    except Exception:
        return None


class BaseStore:
    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def for_model(cls, model_path: str, cfg: ESampConfig, hidden: int, revision: str | None = None) -> BaseStore:
        """The store of ``model_path``: a folder, or a hub id whose files are read from the
        local hub cache that SGLang downloaded them to (at ``revision``, default the newest),
        so a hub model is keyed by its content too."""
        if cfg.distiller in ("adapter", "tail"):  # their shared base is the mlp server's base: one file for all three
            cfg = replace(cfg, distiller="mlp", rank=ESampConfig().rank)
        root = local_folder(model_path, revision)
        if root is None:
            logger.warning("ESamp: %s is neither a folder nor in the local hub cache; its base is keyed by the name alone",
                           model_path)
            root = Path(model_path)
        ident = {
            "config": (root / "config.json").read_text() if (root / "config.json").is_file() else "",
            "weights": weights_digest(root) if root.is_dir() else f"{model_path}@{revision or ''}",
            "hidden": hidden, "layer": cfg.source_layer, "distiller": cfg.distiller, "intermediate": cfg.intermediate,
            "rank": cfg.rank, "seed": cfg.seed, "version": VERSION,
        }
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(os.environ[DIR_ENV]).expanduser() if os.environ.get(DIR_ENV) else cache_root() / "base"
        name = root.name if Path(model_path).expanduser().is_dir() else Path(model_path).name  # a hub id: its name
        return cls(folder / f"{name}-{cfg.distiller}-{key}.pt")

    def load(self) -> SavedBase | None:
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
            return SavedBase(blob["params"], int(blob["steps"]), int(blob["rows"]), float(blob["rel_err"]))
        except Exception as exc:
            logger.warning("ESamp: cannot read the base distiller %s (%s); the server trains a new one", self.path, exc)
            return None

    def save(self, base: WarmBase) -> None:
        """Write the base's weights and counters; the file appears whole (a rename). Reads the
        device: call it off the sampling path."""
        blob = {
            "params": {k: v.detach().cpu() for k, v in base.params.items()},
            "steps": base.steps, "rows": base.rows, "rel_err": float(base.rel_err),
            "version": VERSION, "saved_at": time.time(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        torch.save(blob, tmp)
        tmp.replace(self.path)
