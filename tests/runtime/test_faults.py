"""Fault injection against a real server: a trainer step that raises, a NaN distiller, a
prediction that raises, clients that leave mid-stream, hostile request fields, and more named
groups at once than there are slots. After each: the scheduler answers, a plain greedy request
gives the same text as before, and no group stays live."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from ..client import error_message, esamp_stats, finished, generate_ok, started

pytestmark = pytest.mark.server

FAULTS_DIR = Path(__file__).resolve().parents[1] / "faults"
PROMPT = "Once upon a time"
TENANT_A, TENANT_B = {"X-Tenant": "acme"}, {"X-Tenant": "bolt"}


@pytest.fixture(scope="module")
def fault_server(tiny_model, tmp_path_factory):
    """The tiny model with 2 distiller slots, idle groups freed at once, named groups scoped
    by the X-Tenant header, and the fault hook (tests/faults/sitecustomize.py) reading its
    armed faults from a file."""
    import os

    from sglang_esamp.launch.server import ServerProcess

    faults = tmp_path_factory.mktemp("faults") / "armed.json"
    faults.write_text("[]")
    env = {"ESAMP_FAULTS": str(faults), "PYTHONPATH": os.pathsep.join([str(FAULTS_DIR), os.environ.get("PYTHONPATH", "")])}
    args = ["--model-path", str(tiny_model), "--enable-esamp", "--esamp-max-groups", "2", "--esamp-group-ttl", "0",
            "--esamp-scope-header", "X-Tenant"]
    with ServerProcess(args, env=env) as srv:
        srv.faults = faults
        srv.reference = generate_ok(srv, PROMPT, temperature=0, max_new_tokens=12, ignore_eos=True)["text"]
        yield srv


def arm(server, *faults):
    server.faults.write_text(json.dumps(list(faults)))


def assert_healthy(server):
    """The scheduler answers (its state: SGLang's /health checks its probe request once a
    second, a second that 30 tests would pay), greedy decoding is unchanged, and no group is
    left behind."""
    assert requests.get(server.url + "/get_server_info", timeout=30).status_code == 200
    assert generate_ok(server, PROMPT, temperature=0, max_new_tokens=12, ignore_eos=True)["text"] == server.reference
    deadline = time.time() + 20
    while esamp_stats(server)["live_groups"] and time.time() < deadline:
        time.sleep(0.2)
    assert esamp_stats(server)["live_groups"] == 0


def explore_round(server, n=2, tokens=10):
    outs = generate_ok(server, PROMPT, n=n, max_new_tokens=tokens, ignore_eos=True, explore=0.5)
    outs = outs if isinstance(outs, list) else [outs]
    assert all(o["meta_info"]["completion_tokens"] == tokens for o in outs)
    return outs


@pytest.mark.parametrize("fault, counter", [("train_raise", "trainer_failures"), ("predict_raise", "faults")])
def test_a_raising_step_is_absorbed(fault_server, fault, counter):
    before = esamp_stats(fault_server)
    arm(fault_server, fault)
    explore_round(fault_server)
    after = esamp_stats(fault_server)
    assert json.loads(fault_server.faults.read_text()) == []  # it fired
    if counter == "faults":
        assert after["faults"].get("prediction", 0) == before["faults"].get("prediction", 0) + 1
    else:
        assert after[counter] == before[counter] + 1
    assert after["resets"] > before["resets"]  # the group started over
    assert "injected fault" in fault_server.tail(200000)  # logged with its traceback
    explore_round(fault_server)  # and the next requests explore and train again
    assert esamp_stats(fault_server)["steps_finished"] > after["steps_finished"]
    assert_healthy(fault_server)


def test_a_failed_stratified_draw_keeps_sglangs_draw(fault_server):
    """Every row of the batch is stratified, so SGLang's own draw was skipped: when the codes
    fail, the rows draw by SGLang's sampler after all and the request completes."""
    before = esamp_stats(fault_server)
    arm(fault_server, "strata_raise")
    outs = explore_round(fault_server, n=4)
    assert all(o["meta_info"]["esamp"]["stratified"] for o in outs)
    assert json.loads(fault_server.faults.read_text()) == []  # it fired
    assert esamp_stats(fault_server)["faults"].get("strata", 0) == before["faults"].get("strata", 0) + 1
    assert "injected fault: stratified draw failed" in fault_server.tail(200000)
    assert_healthy(fault_server)


def test_a_nan_distiller_resets_and_samples_untilted(fault_server):
    before = esamp_stats(fault_server)
    arm(fault_server, "nan_distiller")
    explore_round(fault_server, n=1, tokens=16)  # n=1: no prefix warm-up request, whose group a ttl of 0 would free
    after = esamp_stats(fault_server)
    assert after["resets"] > before["resets"] and after["skipped_steps"] > before["skipped_steps"]
    assert_healthy(fault_server)


def test_clients_that_leave_mid_stream(fault_server):
    body = {"text": PROMPT, "stream": True, "sampling_params": {"max_new_tokens": 300, "ignore_eos": True, "explore": 0.5, "n": 2}}
    for _ in range(3):
        with requests.post(fault_server.url + "/generate", json=body, stream=True, timeout=60) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(line for line in lines if line)  # a first chunk, then hang up
    assert_healthy(fault_server)


@pytest.mark.parametrize(
    "sampling, message",
    [
        ({"custom_params": {"__esamp__": "x"}}, "custom_params key '__esamp__' is reserved"),
        ({"custom_params": {"__esamp__": {"explore": 1e300, "group": "g:a"}}}, "is reserved"),
        ({"custom_params": {"__esamp_scope__": "acme"}}, "is reserved"),
        ({"explore": 1e300}, "explore must be in [0, 4.0]"),
        ({"explore": 0.5, "explore_group": "a\nb"}, "explore_group must be a non-empty string"),
        ({"explore": 0.5, "explore_group": "   "}, "explore_group must be a non-empty string"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_hostile_fields_are_a_400_on_generate(fault_server, sampling, message, stream):
    body = {"text": PROMPT, "stream": stream, "sampling_params": {"max_new_tokens": 4, **sampling}}
    r = requests.post(fault_server.url + "/generate", json=body, timeout=60)
    assert r.status_code == 400 and message in error_message(r), r.text
    assert_healthy(fault_server)


def test_a_huge_integer_explore_is_a_400(fault_server):
    """1 followed by 400 zeros: SGLang's JSON reader refuses it on /generate; on the OpenAI
    route it reaches ESamp's check as a Python int (tests/runtime/test_params.py covers the
    engine's path)."""
    huge = "1" + "0" * 400
    bodies = [("/generate", '{"text": "Hi", "stream": %s, "sampling_params": {"explore": %s}}'),
              ("/v1/completions", '{"model": "m", "prompt": "Hi", "max_tokens": 2, "stream": %s, "explore": %s}')]
    for route, template in bodies:
        for stream in ("false", "true"):
            r = requests.post(fault_server.url + route, data=template % (stream, huge), headers={"Content-Type": "application/json"},
                              timeout=60)
            message = error_message(r)
            assert r.status_code == 400 and ("explore must be a finite number" in message or "JSON" in message), r.text
    assert_healthy(fault_server)


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("stream", [False, True])
def test_hostile_fields_are_a_400_on_the_openai_routes(fault_server, route, stream):
    base = {"model": "m", "max_tokens": 4, "stream": stream}
    base |= {"prompt": PROMPT} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "Hi"}]}
    for extra, message in (({"explore": 9}, "explore must be in"), ({"explore": 0.5, "explore_group": "a\tb"}, "explore_group"),
                           ({"custom_params": {"__esamp__": "x"}}, "is reserved")):
        r = requests.post(fault_server.url + route, json=base | extra, timeout=60)
        assert r.status_code == 400 and message in error_message(r), r.text
    assert_healthy(fault_server)


@pytest.mark.parametrize("explore", [None, 0.5])
def test_out_of_vocabulary_token_ids_are_a_400(fault_server, explore):
    """An id past the vocabulary, or a negative one, would index past the embedding inside
    the scheduler and take the server down: /generate's input_ids and a /v1/completions
    prompt of ids are refused with a 400 instead (a streamed /generate gets the same message
    as its error event, as SGLang sends its other input checks)."""
    extra = {} if explore is None else {"explore": explore}
    for ids in ([1, 2, 1_000_000_000], [1, -1, 2]):
        r = requests.post(fault_server.url + "/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 2, **extra}},
                          timeout=60)
        assert r.status_code == 400 and "vocabulary" in error_message(r), r.text
        r = requests.post(fault_server.url + "/generate", timeout=60,
                          json={"input_ids": ids, "stream": True, "sampling_params": {"max_new_tokens": 2, **extra}})
        assert "vocabulary" in r.text, r.text
        r = requests.post(fault_server.url + "/v1/completions", json={"model": "m", "prompt": ids, "max_tokens": 2, **extra},
                          timeout=60)
        assert r.status_code == 400 and "vocabulary" in error_message(r), r.text
    assert_healthy(fault_server)


def test_more_named_groups_than_slots(fault_server):
    """10 groups at once for 2 slots: every request is answered in full, the denied ones say
    so, and later ones take the slots that free."""
    def one(i):
        sampling = {"max_new_tokens": 24, "ignore_eos": True, "explore": 0.5, "explore_group": f"burst-{i}"}
        body = {"text": PROMPT, "sampling_params": sampling}
        r = requests.post(fault_server.url + "/generate", json=body, headers=TENANT_A, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    before = esamp_stats(fault_server)
    with ThreadPoolExecutor(10) as pool:
        metas = [o["meta_info"]["esamp"] for o in pool.map(one, range(10))]
    assert all(o["group"].startswith("burst-") for o in metas)
    assert any(m["denied"] for m in metas) and esamp_stats(fault_server)["denied_groups"] > before["denied_groups"]
    assert any(m["slot"] is not None for m in metas)
    assert_healthy(fault_server)
    assert esamp_stats(fault_server)["held_slots"] == 0  # ttl 0: nothing stays held


def test_named_groups_are_scoped_by_the_gateway_header(fault_server):
    """The same explore_group under two tenants is two groups; without the header it is refused."""
    def named(headers, route="/generate"):
        if route == "/generate":
            sampling = {"max_new_tokens": 6, "ignore_eos": True, "explore": 0.5, "explore_group": "team"}
            body = {"text": PROMPT, "sampling_params": sampling}
        else:
            body = {"model": "m", "prompt": PROMPT, "max_tokens": 6, "explore": 0.5, "explore_group": "team"}
        return requests.post(fault_server.url + route, json=body, headers=headers, timeout=300)

    long = started(fault_server, PROMPT, headers=TENANT_A, tokens=20, max_new_tokens=400, ignore_eos=True, explore=0.5,
                   explore_group="team")  # acme's group is running, 19 steps in, while the others arrive
    again, other = named(TENANT_A), named(TENANT_B)
    assert finished(long)["meta_info"]["finish_reason"]["type"] == "length"  # it ran all along
    metas = [r.json()["meta_info"]["esamp"] for r in (again, other)]
    assert all(m["group"] == "team" for m in metas) and metas[0]["slot"] != metas[1]["slot"]
    assert metas[0]["steps"] > metas[1]["steps"] + 15  # acme's second call joined the running acme group
    for route in ("/generate", "/v1/completions"):
        r = named({}, route)
        assert r.status_code == 400 and "explore_group needs the X-Tenant header" in error_message(r), r.text
    assert named(TENANT_B, "/v1/completions").status_code == 200
    assert_healthy(fault_server)
