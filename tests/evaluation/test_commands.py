"""``sglang-esamp eval`` end to end in a tiny mode against the real CPU server. The first
call runs the entry point in a process of its own; the rest call it in this one."""

import json

import pytest

from ..commands import cli, cli_process


@pytest.mark.server
def test_eval_tiny_run_resumes_and_guards_its_folder(tiny_esamp_server, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--task", "svamp", "--limit", "2", "--n", "2", "--methods", "vanilla,min_p,fire,edt,esamp,matched",
            "--explore", "0.5", "--max-new-tokens", "6", "--concurrency", "2", "--out", str(out), "--url", tiny_esamp_server.url]
    cli_process(*args)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    names = ["vanilla", "min_p", "fire", "edt", "esamp@0.5", "matched@0.5"]
    assert sorted((r["method"], r["problem"]) for r in records) == sorted((m, p) for m in names for p in {r["problem"] for r in records})
    assert all(len(r["samples"]) == 2 and all(isinstance(s["correct"], bool) for s in r["samples"]) for r in records)
    esamp = [s["esamp"] for r in records if r["method"] == "esamp@0.5" for s in r["samples"]]
    assert all(m is not None and m["explore"] == 0.5 for m in esamp)
    server_cfg = json.loads((out / "config.json").read_text())["esamp_config"]
    assert server_cfg["max_groups"] == 4 and server_cfg["tilt"] == "residual" and server_cfg["init"] == "calibrated"
    results = json.loads((out / "results.json").read_text())
    assert results["problems"] == 2 and list(results["methods"]) == names
    for summary in results["methods"].values():
        assert 0.0 <= summary["pass@1"]["mean"] <= summary["pass@2"]["mean"] <= 1.0
        assert summary["ppl"]["mean"] > 1.0 and summary["tokens"]["mean"] <= 6
    assert "vs matched@0.5" in results["methods"]["esamp@0.5"]
    for name in ("report.md", "passk.png", "diversity.png"):
        assert (out / name).stat().st_size > 0

    (out / "report.md").unlink()
    assert "| esamp@0.5 |" in cli("eval-report", str(out)).stdout and (out / "report.md").stat().st_size > 0
    bad = cli("eval-report", str(tmp_path), check=False)
    assert bad.returncode != 0 and "is not an eval folder" in bad.stderr

    cli(*args)  # everything is done: nothing is redone
    assert len((out / "samples.jsonl").read_text().splitlines()) == len(records)
    config_path = out / "config.json"
    saved = json.loads(config_path.read_text())
    for value, accepted in ((None, True), (9, False)):  # a run from before a knob existed ran at its default
        edited = json.loads(json.dumps(saved))
        edited["esamp_config"].pop("prompt_steps")
        if value is not None:
            edited["esamp_config"]["prompt_steps"] = value
        config_path.write_text(json.dumps(edited))
        assert (cli(*args, check=False).returncode == 0) == accepted
    config_path.write_text(json.dumps(saved))
    other = cli(*[a if a != "6" else "7" for a in args], check=False)
    assert other.returncode != 0 and "holds a run with another configuration" in other.stderr
    cut = cli(*[a if a != "2" or i != 4 else "1" for i, a in enumerate(args)], check=False)
    assert cut.returncode != 0 and "may extend it, not cut it" in cut.stderr
    extended = [a if a != "2" or i != 4 else "3" for i, a in enumerate(args)]
    cli(*extended)  # a larger --limit adds the third problem only
    records3 = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert records3[: len(records)] == records and len(records3) == len(records) * 3 // 2
    assert json.loads((out / "results.json").read_text())["problems"] == 3


def test_eval_bad_flags_are_clear_errors(tmp_path):
    proc = cli("eval", "--task", "svamp", "--methods", "vanilla,nope", "--out", str(tmp_path), "--url", "http://127.0.0.1:9", check=False)
    assert proc.returncode != 0 and "unknown method 'nope'" in proc.stderr
    proc = cli("eval", "--task", "gsm9k", "--out", str(tmp_path), check=False)
    assert proc.returncode != 0 and "invalid choice: 'gsm9k'" in proc.stderr
