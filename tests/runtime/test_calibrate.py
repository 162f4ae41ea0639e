"""``--esamp-init calibrated`` end to end on the tiny model: a server with no saved base
starts at once and loads no second model; ``sglang-esamp calibrate`` has it train its base
on its own decoding and save it; the next start loads it, and every group starts from it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sglang_esamp.core import ESampConfig
from sglang_esamp.core import warm_base as wb
from sglang_esamp.runtime.base import BaseStore

from ..client import esamp_stats, generate_ok

STORY = "Once upon a time, in a small village by the sea,"
LOAD_PROBE_DIR = Path(__file__).resolve().parents[1] / "load_probe"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("esamp-base")


@pytest.fixture(scope="module")
def calibrated(tiny_model, base_dir, tmp_path_factory):
    """``sglang-esamp calibrate --model-path TINY`` into a private base folder, with every
    process's transformers model loads recorded. (stdout, the probe's records)"""
    probe = tmp_path_factory.mktemp("probe") / "loads.txt"
    env = dict(os.environ, SGLANG_ESAMP_BASE_DIR=str(base_dir), ESAMP_LOAD_PROBE=str(probe),
               PYTHONPATH=os.pathsep.join([str(LOAD_PROBE_DIR), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "sglang_esamp.cli", "calibrate", "--model-path", str(tiny_model)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, probe.read_text() if probe.exists() else ""


@pytest.mark.server
def test_calibrate_trains_and_saves_the_base_in_the_server(calibrated, tiny_model, base_dir, monkeypatch):
    out, loads = calibrated
    assert loads == ""  # no process loaded a model through transformers: the server's own SGLang model only
    monkeypatch.setenv("SGLANG_ESAMP_BASE_DIR", str(base_dir))
    store = BaseStore.for_model(str(tiny_model), ESampConfig(init="calibrated"), hidden=64)
    assert f"base distiller: {store.path}" in out
    saved = store.load()
    assert saved is not None and saved.steps >= wb.FIRST_STEPS and saved.rows >= wb.MIN_ROWS
    assert 0 < saved.rel_err < 1.0, saved.rel_err
    # another distiller shape, hidden size or model is another file
    assert BaseStore.for_model(str(tiny_model), ESampConfig(init="calibrated", distiller="lowrank"), 64).path != store.path
    assert BaseStore.for_model(str(tiny_model), ESampConfig(init="calibrated"), 128).path != store.path


@pytest.fixture(scope="module")
def cold_start(tiny_model, tmp_path_factory):
    """A server with no saved base (its own empty folder): its first group starts random, as
    with ``--esamp-init random`` (the same seed), and the base then gathers rows."""
    from types import SimpleNamespace

    from sglang_esamp.launch.server import ServerProcess

    folder = tmp_path_factory.mktemp("cold-bases")
    with ServerProcess(["--model-path", str(tiny_model), "--enable-esamp"], env={"SGLANG_ESAMP_BASE_DIR": str(folder)}) as srv:
        first = generate_ok(srv, STORY, temperature=0, max_new_tokens=2, explore=0.25)["meta_info"]["esamp"]
        sampled = generate_ok(srv, STORY, max_new_tokens=8, explore=0.5, n=2)
        return SimpleNamespace(log=srv.tail(20000), first=first, sampled=sampled, base=esamp_stats(srv)["base"], folder=folder)


@pytest.mark.server
def test_a_restart_loads_the_base_and_groups_start_from_it(calibrated, cold_start, tiny_model, base_dir, monkeypatch):
    """The prompt fit on top of the base (``calibrated+prompt``) is counted step by step in
    tests/runtime/test_runtime.py and runs in a server in tests/runtime/test_stress.py."""
    from sglang_esamp.launch.server import ServerProcess

    monkeypatch.setenv("SGLANG_ESAMP_BASE_DIR", str(base_dir))
    store = BaseStore.for_model(str(tiny_model), ESampConfig(init="calibrated"), hidden=64)
    saved = store.load()
    with ServerProcess(["--model-path", str(tiny_model), "--enable-esamp", "--esamp-init", "calibrated"]) as srv:
        first = generate_ok(srv, STORY, temperature=0, max_new_tokens=2, explore=0.25)["meta_info"]["esamp"]
        base = esamp_stats(srv)["base"]
        assert "start from the base distiller" in srv.tail(20000)
    assert base["fitted"] and base["steps"] == saved.steps and base["saved_steps"] is None
    random = cold_start.first  # no base yet: a random start
    assert first["steps"] == random["steps"] == 1
    # the first step's error is the initial distiller's: the base's is far below a random one's
    assert first["rel_err"] < 0.8 * random["rel_err"], (first, random)


@pytest.mark.server
def test_a_cold_server_serves_at_once_and_reports_its_base(cold_start):
    """No saved base: the server starts, groups start random, and the base owes nothing
    until it has ``MIN_ROWS`` rows."""
    assert "no base distiller saved for this model yet" in cold_start.log
    assert all(m["meta_info"]["esamp"]["steps"] == 7 for m in cold_start.sampled)  # 8 tokens: the prefill's, then 7 decode steps
    base = cold_start.base
    # the rows of the decode steps with explore: 1 of the greedy request, 2 x 7 of the sampled one
    assert base == {"steps": 0, "owed": 0, "rows": 15, "fitted": False, "failures": 0, "path": base["path"], "saved_steps": None}
    assert not list(cold_start.folder.iterdir())  # nothing saved before a fit


def test_an_unreadable_base_file_is_ignored_with_a_warning(tiny_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SGLANG_ESAMP_BASE_DIR", str(tmp_path))
    store = BaseStore.for_model(str(tiny_model), ESampConfig(init="calibrated", seed=7), hidden=64)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(b"not a checkpoint")
    assert store.load() is None
    assert str(store.path) in caplog.text and "trains a new one" in caplog.text


def test_a_saved_base_round_trips(tmp_path):
    from sglang_esamp.core.distiller import build_architecture, random_init

    arch = build_architecture("lowrank", 8, 16, 4)
    init = random_init(arch.shapes(), 1, torch.Generator().manual_seed(3), None)
    base = wb.WarmBase(arch, 8, "cpu", torch.float32, init, steps=700, rows=9000)
    store = BaseStore(tmp_path / "sub" / "base.pt")
    store.save(base)
    saved = store.load()
    assert (saved.steps, saved.rows) == (700, 9000)
    assert all(torch.equal(saved.params[k], init[k]) for k in init)
    assert [p.name for p in store.path.parent.iterdir()] == ["base.pt"]  # no temporary file left


def test_calibrate_rejects_flags_that_are_not_esamp_ones():
    run = subprocess.run([sys.executable, "-m", "sglang_esamp.cli", "calibrate", "--esamp-distiler", "mlp"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--esamp-distiler" in run.stderr


def test_calibrate_takes_esamp_flags_for_the_server_it_starts(monkeypatch):
    """The flags reach the server's arguments (argparse alone refused every --esamp-* flag)."""
    from sglang_esamp import cli

    seen = {}
    monkeypatch.setattr(cli, "calibrate", lambda args: seen.setdefault("flags", args.esamp_flags))
    monkeypatch.setitem(cli.COMMANDS, "calibrate", cli.calibrate)
    cli.main(["calibrate", "--esamp-distiller", "lowrank", "--esamp-rank", "32"])
    assert seen["flags"] == ["--esamp-distiller", "lowrank", "--esamp-rank", "32"]


FITTED = {"steps": 600, "owed": 0, "rows": 2110, "fitted": True, "failures": 0, "path": "/b.pt", "saved_steps": None}


def test_calibrate_returns_at_once_from_a_server_that_loaded_its_base(monkeypatch, capsys):
    """A loaded base is fitted but was never saved by this server (saved_steps None): there is
    nothing to send and nothing to wait for."""
    from sglang_esamp import cli
    from sglang_esamp.launch import calibrate

    monkeypatch.setattr(calibrate, "_base", lambda url: FITTED)
    monkeypatch.setattr(calibrate.requests, "post", lambda *a, **k: pytest.fail(f"a warm server was sent {a}"))
    monkeypatch.setattr(calibrate.time, "sleep", lambda s: pytest.fail("calibrate waited on a warm server"))
    cli.main(["calibrate", "--url", "http://127.0.0.1:1"])
    assert "the server is warm: its base distiller is already fitted (600 steps on 2110 rows)" in capsys.readouterr().out


def test_calibrate_sends_chat_prompts_as_text_to_a_model_without_a_chat_template(monkeypatch):
    from types import SimpleNamespace

    from sglang_esamp.launch import calibrate

    routes = []
    for status in (200, 400):  # SGLang answers 400 on the chat route for a model without a template
        answer = SimpleNamespace(status_code=status)
        monkeypatch.setattr(calibrate.requests, "post", lambda url, answer=answer, **k: routes.append(url) or answer)
        kinds = [kind for kind, _ in calibrate._prompts("http://s")]
        assert len(kinds) == 40 and kinds.count("chat") == (28 if status == 200 else 0)
    assert routes == ["http://s/v1/chat/completions"] * 2


def test_calibrate_refuses_server_flags_with_a_url():
    run = subprocess.run([sys.executable, "-m", "sglang_esamp.cli", "calibrate", "--url", "http://127.0.0.1:1", "--model-path", "x"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "apply only to a server started here" in run.stderr


@pytest.mark.parametrize("full_hash_bytes", [2**30, 0])  # every byte, and the sampled digest of large models
def test_the_base_key_is_the_weights_content_not_the_folder_name(tiny_model, tmp_path, monkeypatch, full_hash_bytes):
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
    path = lambda folder: BaseStore.for_model(str(folder), cfg, 64).path  # noqa: E731
    assert path(copies[0]) != path(copies[1]) and path(copies[0]) == path(copies[0])


def test_with_data_parallel_calibrate_waits_for_every_ranks_base():
    """Each DP rank trains its own base: calibrate sends rounds until every rank is fitted or
    owes its fit, and waits until none owes one and every fit is saved."""
    from sglang_esamp.launch.calibrate import merged

    cold = {"fitted": False, "owed": 0, "rows": 900, "steps": 0, "saved_steps": None}
    owes = {"fitted": False, "owed": 600, "rows": 2100, "steps": 0, "saved_steps": None}
    done = {"fitted": True, "owed": 0, "rows": 2200, "steps": 600, "saved_steps": 600}
    assert merged([done]) is done
    view = merged([done, cold])
    assert not view["fitted"] and view["owed"] == 0 and view["rows"] == 900  # rank 1 still needs rows: another round
    view = merged([owes, done])
    assert not view["fitted"] and view["owed"] == 600  # every rank has its rows: wait for rank 0's fit
    view = merged([done, done | {"saved_steps": 550}])
    assert view["fitted"] and view["steps"] == 1200 and view["saved_steps"] == 1150  # still saving
    loaded = {"fitted": True, "owed": 0, "rows": 0, "steps": 600, "saved_steps": None}  # from its file: nothing to save
    view = merged([loaded, done])
    assert view["fitted"] and view["saved_steps"] == view["steps"] == 1200


def test_a_hub_models_base_is_keyed_by_the_content_in_the_hub_cache(tiny_model, tmp_path, monkeypatch):
    """A hub id (not a folder) is read from the local hub cache, laid out as huggingface_hub
    lays it out: its base file is the one its snapshot folder gets, and changes with its weights."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--acme--tiny"
    paths = []
    for commit, scale in (("a" * 40, 1.0), ("b" * 40, 2.0)):
        snap = repo / "snapshots" / commit
        shutil.copytree(tiny_model, snap)
        (snap / "model.safetensors").write_bytes((snap / "model.safetensors").read_bytes()[:-8] + bytes([int(scale)] * 8))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        cfg = ESampConfig(init="calibrated")
        hub = BaseStore.for_model("acme/tiny", cfg, 64).path
        key = BaseStore.for_model(str(snap), cfg, 64).path.name.rsplit("-", 1)[1]
        assert hub.name == f"tiny-mlp-{key}"  # the id's name, and the snapshot's content key
        paths.append(hub)
    assert paths[0] != paths[1]  # new weights under the same id: a new base
    assert BaseStore.for_model("acme/tiny", cfg, 64, revision="a" * 40).path == paths[0]


def test_the_adapter_reads_the_default_mlp_servers_base(tmp_path, monkeypatch):
    """The adapter's shared base is an mlp: whatever its own rank, it finds the file a default
    mlp server saved, and a lowrank server's is another."""
    monkeypatch.setenv("SGLANG_ESAMP_BASE_DIR", str(tmp_path / "bases"))
    (tmp_path / "config.json").write_text("{}")
    path = lambda **cfg: BaseStore.for_model(str(tmp_path), ESampConfig(init="calibrated", **cfg), hidden=64).path  # noqa: E731
    assert path(distiller="adapter", rank=16) == path(distiller="adapter") == path()
    assert path(distiller="lowrank") != path()
