"""The calibrated base distiller (``--esamp-init calibrated``): fitted once per model, cached.

The model writes its own text for the shipped calibration prompts (``data/calibration_prompts.txt``:
chat instructions through its chat template, plain-text openings as they are), and one
forward pass per text gives every position's shallow and deep state (``text_states``): the
pair the server captures per decode row. The core's ``fit_base`` fits one distiller to
them; the result is cached under ``<cache root>/calibration/`` keyed by the model's files,
the distiller's shape and the seed, so a server start after the first loads it at once.

Usage::

    fit, path = load_or_calibrate(model_path, cfg)     # cfg: ESampConfig
    sglang-esamp calibrate                             # the embedded model, default distiller
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..core.calibration import BaseFit, fit_base
from ..core.config import ESampConfig
from ..core.distiller import build_architecture, norm_gain
from . import text_states
from .cache import cache_root

logger = logging.getLogger(__name__)

PROMPTS = Path(__file__).resolve().parent.parent / "data" / "calibration_prompts.txt"
VERSION = 1  # bump when the recipe below changes, so cached bases are refitted
NEW_TOKENS = 128  # continuation length per prompt
GEN_BATCH = 20
FIT_STEPS = 600
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
FULL_HASH_BYTES = 2**30  # hash every byte of models up to this size (about half a second per GiB)
SAMPLES, SAMPLE_BYTES = 64, 2**16  # larger models: 64 reads of 64 KiB per file


@dataclass
class CalibrationInfo:
    rows: int
    gen_seconds: float
    fit_seconds: float
    rel_err_init: float
    rel_err: float


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


def _model_key(model_path: str, cfg: ESampConfig) -> str:
    root = Path(model_path).resolve()
    ident = {
        "config": (root / "config.json").read_text() if (root / "config.json").is_file() else "",
        "weights": weights_digest(root),
        "layer": cfg.source_layer, "distiller": cfg.distiller, "intermediate": cfg.intermediate, "rank": cfg.rank,
        "seed": cfg.seed, "version": VERSION,
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def base_path(model_path: str, cfg: ESampConfig) -> Path:
    return cache_root() / "calibration" / f"{Path(model_path).name}-{cfg.distiller}-{_model_key(model_path, cfg)}.pt"


def _prompts(tokenizer) -> list[list[int]]:
    """Token ids of the shipped prompts: chat lines through the model's template (when it has
    one), text lines as they are."""
    out = []
    for line in PROMPTS.read_text().splitlines():
        kind, text = line.split("\t", 1)
        if kind == "chat" and tokenizer.chat_template:
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
            out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            out.append(tokenizer(text)["input_ids"])
    return out


def collect_pairs(model_path: str, source_layer: int, seed: int, progress: bool = True):
    """(src, tgt, out_gain): (N, D) shallow and deep states over the model's own text, and
    its final-norm weight (D,)."""
    model, tokenizer = text_states.load(model_path)
    text_states.check_source_layer(model, source_layer)
    prompts = _prompts(tokenizer)
    torch.manual_seed(seed)
    src, tgt = [], []
    bar = tqdm(total=len(prompts), desc="calibration text", disable=not progress)
    for i in range(0, len(prompts), GEN_BATCH):
        texts = text_states.sample(model, tokenizer, prompts[i : i + GEN_BATCH], n=1, max_new_tokens=NEW_TOKENS)
        for h1, h in text_states.states(model, texts, source_layer):
            src.append(h1)
            tgt.append(h)
            bar.update()
    bar.close()
    return torch.cat(src), torch.cat(tgt), norm_gain(model.model.norm)


def calibrate(model_path: str, cfg: ESampConfig, progress: bool = True) -> tuple[BaseFit, CalibrationInfo]:
    t0 = time.perf_counter()
    src, tgt, out_gain = collect_pairs(model_path, cfg.source_layer, cfg.seed, progress)
    t1 = time.perf_counter()
    arch = build_architecture(cfg.distiller, src.shape[-1], cfg.intermediate, cfg.rank)
    fit = fit_base(arch, src, tgt, out_gain, steps=FIT_STEPS, seed=cfg.seed)
    t2 = time.perf_counter()
    return fit, CalibrationInfo(src.shape[0], t1 - t0, t2 - t1, fit.rel_err_init, fit.rel_err)


def load_or_calibrate(model_path: str, cfg: ESampConfig, progress: bool = False) -> tuple[BaseFit, Path]:
    """The cached base for this model and distiller shape, fitted first if there is none.
    Concurrent first starts fit it once (file lock); the file appears whole (a rename)."""
    path = base_path(model_path, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return _load(path), path
        path.with_suffix(".tmp").unlink(missing_ok=True)  # left by a killed fit
        logger.info("ESamp: fitting the calibrated base distiller for %s (once; cached at %s)", model_path, path)
        fit, info = calibrate(model_path, cfg, progress)
        logger.info(
            "ESamp: calibrated base fitted on %d rows in %.0f s (text %.0f s, fit %.0f s); held-out rel_err %.3f (random init %.3f)",
            info.rows, info.gen_seconds + info.fit_seconds, info.gen_seconds, info.fit_seconds, info.rel_err, info.rel_err_init,
        )
        tmp = path.with_suffix(".tmp")
        torch.save({"params": fit.params, "info": asdict(info), "version": VERSION}, tmp)
        tmp.replace(path)
        return fit, path


def _load(path: Path) -> BaseFit:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        info = blob["info"]
        return BaseFit(blob["params"], info["rel_err_init"], info["rel_err"], info["rows"], 0)  # the split is not stored
    except Exception as exc:
        raise ValueError(f"cannot read the calibrated base distiller {path}: {exc}; delete the file to refit it") from exc
