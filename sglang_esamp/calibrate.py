"""The per-model base distiller behind ``--esamp-init calibrated``: collect, fit, cache.

The model writes its own calibration text: 40 shipped prompts (``data/calibration_prompts.txt``,
chat instructions and plain-text openings), one sampled continuation each at temperature 1,
seeded. A forward pass over prompt and continuation gives, at every position, the shallow
state (the output of decoder layer ``source_layer``) and the deep state (the final norm's
output, the LM-head input): the same pair the server captures per decode row. The core's
``fit_base`` fits one distiller to them; the result is cached under
``<cache root>/calibration/`` keyed by the model's files, the distiller's shape and the seed,
so a server start after the first loads it at once.

The model runs here through transformers in float32 on the CPU, whatever the server uses.

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

from .core.calibration import BaseFit, fit_base
from .core.config import ESampConfig
from .core.distiller import build_architecture
from .model_cache import cache_root

logger = logging.getLogger(__name__)

PROMPTS = Path(__file__).resolve().parent / "data" / "calibration_prompts.txt"
VERSION = 1  # bump when the recipe below changes, so cached bases are refitted
NEW_TOKENS = 128  # continuation length per prompt
GEN_BATCH = 20
FIT_STEPS = 600


@dataclass
class CalibrationInfo:
    rows: int
    gen_seconds: float
    fit_seconds: float
    rel_err_init: float
    rel_err: float


def _model_key(model_path: str, cfg: ESampConfig) -> str:
    root = Path(model_path)
    files = {p.name: p.stat().st_size for p in sorted(root.glob("*.safetensors"))}
    ident = {
        "config": (root / "config.json").read_text() if (root / "config.json").is_file() else "",
        "weights": files,
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    if source_layer >= model.config.num_hidden_layers - 1:
        raise ValueError(f"--esamp-source-layer must be below {model.config.num_hidden_layers - 1}; got {source_layer}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                else [model.generation_config.eos_token_id])
    prompts = _prompts(tokenizer)
    torch.manual_seed(seed)
    src, tgt = [], []
    bar = tqdm(total=len(prompts), desc="calibration text", disable=not progress)
    with torch.no_grad():
        for i in range(0, len(prompts), GEN_BATCH):
            chunk = prompts[i : i + GEN_BATCH]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])  # (b, width), left-padded
            mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in chunk]).unsqueeze(1)).long()
            seqs = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                max_new_tokens=NEW_TOKENS, pad_token_id=pad,
            )
            for p, row in zip(chunk, seqs[:, width:].tolist()):
                text = p + _until_stop(row, stops)
                out = model.model(input_ids=torch.tensor([text]), output_hidden_states=True)
                src.append(out.hidden_states[source_layer + 1][0])  # (T, D): output of that layer
                tgt.append(out.last_hidden_state[0])  # (T, D): after the final norm
                bar.update()
    bar.close()
    return torch.cat(src), torch.cat(tgt), model.model.norm.weight.detach().float()


def _until_stop(row: list[int], stops: set) -> list[int]:
    """The continuation up to and excluding its first stop token (no row is decoded after it)."""
    for j, t in enumerate(row):
        if t in stops:
            return row[:j]
    return row


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
    Concurrent first starts fit it once (file lock)."""
    path = base_path(model_path, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return _load(path), path
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
        return BaseFit(blob["params"], info["rel_err_init"], info["rel_err"], info["rows"], 0)  # the split is not stored: all rows count as train
    except Exception as exc:
        raise ValueError(f"cannot read the calibrated base distiller {path}: {exc}; delete the file to refit it") from exc
