"""``--esamp-init calibrated`` end to end on the tiny model: the command fits and caches the
base once, and a real server starts every group from it."""

import os
import subprocess
import sys

import pytest
import torch

from sglang_esamp.core import ESampConfig
from sglang_esamp.runtime.base import base_path, load_or_calibrate

from ..client import generate_ok

STORY = "Once upon a time, in a small village by the sea,"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("esamp-cache")


@pytest.fixture(scope="module")
def calibrated(tiny_model, cache):
    """Run ``sglang-esamp calibrate`` on the tiny model into a private cache."""
    env = dict(os.environ, SGLANG_ESAMP_CACHE=str(cache))
    run = subprocess.run(
        [sys.executable, "-m", "sglang_esamp.cli", "calibrate", "--model-path", str(tiny_model)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_calibrate_command_fits_and_caches_a_better_than_random_base(calibrated, tiny_model, cache, monkeypatch):
    monkeypatch.setenv("SGLANG_ESAMP_CACHE", str(cache))
    cfg = ESampConfig(init="calibrated")
    path = base_path(str(tiny_model), cfg)
    assert f"base distiller: {path}" in calibrated
    blob = torch.load(path, weights_only=True)
    info = blob["info"]
    assert info["rows"] > 1000 and info["rel_err"] < 0.8 * info["rel_err_init"], info
    # a second call loads the cache (the fitting function is never reached)
    monkeypatch.setattr("sglang_esamp.runtime.base.calibrate", lambda *a, **k: pytest.fail("refitted a cached base"))
    fit, again = load_or_calibrate(str(tiny_model), cfg)
    assert again == path and all(torch.equal(fit.params[k], blob["params"][k]) for k in blob["params"])
    # another distiller shape is another cache entry
    assert base_path(str(tiny_model), ESampConfig(init="calibrated", distiller="lowrank")) != path


def test_a_corrupt_cache_file_is_named_in_the_error(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SGLANG_ESAMP_CACHE", str(tmp_path))
    cfg = ESampConfig(init="calibrated", seed=7)
    path = base_path(str(tiny_model), cfg)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete the file to refit"):
        load_or_calibrate(str(tiny_model), cfg)


def test_calibrate_rejects_flags_that_are_not_esamp_ones():
    run = subprocess.run([sys.executable, "-m", "sglang_esamp.cli", "calibrate", "--esamp-distiler", "mlp"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--esamp-distiler" in run.stderr


@pytest.mark.server
def test_server_groups_start_from_the_calibrated_base(calibrated, tiny_model, cache, monkeypatch):
    from sglang_esamp.launch.server import ServerProcess

    monkeypatch.setenv("SGLANG_ESAMP_CACHE", str(cache))
    path = base_path(str(tiny_model), ESampConfig(init="calibrated"))
    mtime = path.stat().st_mtime_ns
    first = {}
    for init in ("calibrated", "random", "calibrated+prompt"):
        with ServerProcess(["--model-path", str(tiny_model), "--enable-esamp", "--esamp-init", init, "--esamp-prompt-steps", "2"]) as srv:
            first[init] = generate_ok(srv, STORY, temperature=0, max_new_tokens=2, explore=0.25)["meta_info"]["esamp"]
            if init == "calibrated":
                assert "calibrated base" in srv.tail(20000)
    assert path.stat().st_mtime_ns == mtime  # loaded, not refitted
    assert first["calibrated"]["steps"] == first["random"]["steps"] == 1
    assert first["calibrated+prompt"]["steps"] == 3  # 2 on the prompt's rows during the prefill, then the decode step
    # the first step's error is the initial distiller's: the base's is far below a random one's
    assert first["calibrated"]["rel_err"] < 0.8 * first["random"]["rel_err"], first


@pytest.mark.parametrize("full_hash_bytes", [2**30, 0])  # every byte, and the sampled digest of large models
def test_the_cache_key_is_the_weights_content_not_the_folder_name(tiny_model, tmp_path, monkeypatch, full_hash_bytes):
    """A fine-tuned copy with the same folder name, config and shapes gets its own base."""
    import shutil

    from safetensors.torch import load_file, save_file

    monkeypatch.setattr("sglang_esamp.runtime.base.FULL_HASH_BYTES", full_hash_bytes)
    copies = []
    for i, scale in enumerate((1.0, 1.05)):  # bf16 weights: a step it can represent
        folder = tmp_path / str(i) / tiny_model.name
        shutil.copytree(tiny_model, folder)
        weights = folder / "model.safetensors"
        tensors = load_file(weights)
        save_file({k: v * scale for k, v in tensors.items()}, weights, metadata={"format": "pt"})
        copies.append(folder)
    cfg = ESampConfig(init="calibrated")
    sizes = {(c / "model.safetensors").stat().st_size for c in copies}
    assert copies[0].name == copies[1].name and len(sizes) == 1
    assert base_path(str(copies[0]), cfg) != base_path(str(copies[1]), cfg)
    assert base_path(str(copies[0]), cfg) == base_path(str(copies[0]), cfg)
