"""``--esamp-train-every`` and ``--esamp-optimizer adam`` in a real server (the tiny model):
a training step every second decode step, the groups' Adam moments held and counted."""

import json

import pytest

from ..client import esamp_stats, generate_ok

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def every_two_server(tiny_model):
    from sglang_esamp.launch.server import ServerProcess

    args = ["--model-path", str(tiny_model), "--enable-esamp", "--esamp-train-every", "2", "--esamp-optimizer", "adam",
            "--esamp-max-groups", "2", "--esamp-group-ttl", "0"]
    with ServerProcess(args) as srv:
        yield srv


def test_a_group_trains_every_second_decode_step_with_adam(every_two_server, tiny_model):
    before = esamp_stats(every_two_server)
    assert before["config"]["train_every"] == 2 and before["config"]["optimizer"] == "adam"
    hidden = json.loads((tiny_model / "config.json").read_text())["hidden_size"]
    weights = 2 * 3 * hidden * 384 + hidden  # two SwiGLU blocks of width 384, and the output gain
    assert before["bytes_per_group"] == 3 * weights * 4 + 4  # float32 weights and Adam's two moments, and a step count
    outs = generate_ok(every_two_server, "Once upon a time", n=2, temperature=1.0, max_new_tokens=17, ignore_eos=True,
                       explore=0.5)
    metas = [o["meta_info"]["esamp"] for o in outs]
    assert len({m["slot"] for m in metas}) == 1
    # 16 decode steps (the first token comes from the prefill): 8 steps, the metadata trailing by at most one
    assert all(m["steps"] in (7, 8) for m in metas), metas
    after = esamp_stats(every_two_server)
    assert after["steps_submitted"] - before["steps_submitted"] == 8
    assert after["trainer_failures"] == 0 and after["tilted_rows"]["plausible"] > 0
