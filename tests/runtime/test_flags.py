import argparse
import json
import os

import pytest

from sglang_esamp import ESampConfig
from sglang_esamp.runtime import flags


def test_every_config_field_has_a_flag_with_help():
    parser = argparse.ArgumentParser()
    flags.add_arguments(parser)
    text = parser.format_help()
    assert "--enable-esamp" in text
    for name in ESampConfig.field_names():
        assert flags.flag_name(name) in text
    assert "{auto,thread,inline}" in text  # choice-valued fields list their choices


def test_parse_and_export_round_trip(monkeypatch):
    monkeypatch.delenv(flags.ENV, raising=False)
    cfg = flags.parse(["--model-path", "m", "--enable-esamp", "--esamp-max-groups", "8", "--esamp-distiller=lowrank"])
    assert cfg == ESampConfig(max_groups=8, distiller="lowrank")
    flags.export(cfg)
    assert json.loads(os.environ[flags.ENV])["max_groups"] == 8
    assert flags.current() == cfg
    flags.export(None)
    assert flags.current() is None and flags.ENV not in os.environ


def test_disabled_and_misused_flags():
    assert flags.parse(["--model-path", "m"]) is None
    with pytest.raises(ValueError, match="--esamp-lr given without --enable-esamp"):
        flags.parse(["--esamp-lr", "0.1"])
    with pytest.raises(ValueError, match=r"ESampConfig\.staleness"):
        flags.parse(["--enable-esamp", "--esamp-staleness", "-2"])


def test_corrupt_environment_is_reported(monkeypatch):
    monkeypatch.setenv(flags.ENV, '{"nope": 1}')
    with pytest.raises(ValueError, match=flags.ENV):
        flags.current()


def test_the_docs_flag_table_is_the_generated_one():
    """docs/server.md shows the flags as ``markdown_table`` renders the config's declarations."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text()
    table = text.split("<!-- flags:begin")[1].split("-->", 1)[1].split("<!-- flags:end -->")[0]
    assert table.strip() == flags.markdown_table(), "run: python -m sglang_esamp.runtime.flags, and paste into docs/server.md"
    for name, knob in ESampConfig.knobs().items():
        assert flags.flag_name(name) in table and knob.help in table


@pytest.mark.parametrize("fields, message", [({"speculative_algorithm": "EAGLE3"}, "speculative decoding"),
                                             ({"pp_size": 2}, "pipeline parallelism")])
def test_features_esamp_cannot_run_with_are_refused(fields, message):
    from types import SimpleNamespace

    args = SimpleNamespace(**({"speculative_algorithm": None, "pp_size": 1} | fields))
    with pytest.raises(ValueError, match=message):
        flags.check_server_args(args, ESampConfig())
    flags.check_server_args(args, None)  # a server without ESamp is SGLang's business


@pytest.mark.server
def test_the_launcher_refuses_speculative_decoding_at_start(tiny_model):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "sglang_esamp.cli", "serve", "--model-path", str(tiny_model), "--enable-esamp",
           "--speculative-algorithm", "EAGLE3", "--port", "9"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--enable-esamp cannot run with speculative decoding" in proc.stderr
