"""Shared fixtures: the embedded model, a tiny random Llama, and real SGLang servers.

Servers are session-scoped: each distinct configuration starts once per test run. Every
test that starts a real server carries ``@pytest.mark.server`` (a test that uses a server
fixture without it is a collection error), so ``python -m pytest -m "not server"`` is the
fast tier.
"""

from __future__ import annotations

import pytest

from sglang_esamp.launch import cpu

cpu.setup()  # the test process starts here: before sglang is first imported


@pytest.fixture(scope="session", autouse=True)
def isolated_bases(tmp_path_factory):
    """Servers of this run save and load their base distillers in a folder of their own, so
    no run depends on what an earlier one trained."""
    import os

    from sglang_esamp.runtime.base import DIR_ENV

    folder = tmp_path_factory.mktemp("esamp-bases")
    old = os.environ.get(DIR_ENV)
    os.environ[DIR_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(DIR_ENV, None)
    else:
        os.environ[DIR_ENV] = old

SERVER_FIXTURES = {"server", "esamp_server", "tiny_esamp_server", "fault_server", "stress_server", "probed"}


def pytest_collection_modifyitems(config, items):
    unmarked = [i.nodeid for i in items if SERVER_FIXTURES & set(getattr(i, "fixturenames", ())) and not i.get_closest_marker("server")]
    if unmarked:
        raise pytest.UsageError("tests that start a server need @pytest.mark.server: " + ", ".join(unmarked))


@pytest.fixture(scope="session")
def embedded_model():
    from sglang_esamp.launch.model_cache import embedded_model_path

    return embedded_model_path(show_progress=False)


@pytest.fixture(scope="session")
def tiny_model(embedded_model, tmp_path_factory):
    """A 2-layer, 64-wide random Llama with the embedded model's tokenizer: fast to serve."""
    from .tiny_models import build

    return build("llama", tmp_path_factory.mktemp("tiny-llama"), embedded_model)


@pytest.fixture(scope="session")
def server(embedded_model):
    """The real SGLang HTTP server on the embedded model, plain."""
    from sglang_esamp.launch.server import ServerProcess

    with ServerProcess() as srv:
        yield srv


@pytest.fixture(scope="session")
def esamp_server(embedded_model):
    """The real SGLang HTTP server on the embedded model with ESamp as published (random
    init, the paper's tilt over every token): its tests check training and tilting from a cold start.
    The defaults (calibrated, residual) run in test_calibrate.py and through the programs."""
    from sglang_esamp.launch.server import ServerProcess

    with ServerProcess(["--enable-esamp", "--esamp-init", "random", "--esamp-tilt", "paper", "--esamp-tail-floor", "0",
                        "--esamp-tilt-center", "none"]) as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_esamp_server(tiny_model):
    """ESamp on the tiny random model with only 4 distiller slots (for reuse and soak tests),
    custom logit processors on (the eval harness's FIRE and EDT) and Prometheus metrics."""
    from sglang_esamp.launch.server import ServerProcess

    args = ["--model-path", str(tiny_model), "--enable-esamp", "--esamp-max-groups", "4", "--esamp-group-ttl", "0",
            "--enable-custom-logit-processor", "--enable-metrics"]
    with ServerProcess(args) as srv:
        yield srv
