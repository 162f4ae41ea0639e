"""report.aggregate on a hand-written samples.jsonl: per-problem metrics and paired differences."""

import json

import pytest

from sglang_esamp.evaluation.report import aggregate, compare_table, open_samples, summary_table, write_report


def sample(text, answer, correct, nll=1.0, finish="length", tokens=8):
    return {"text": text, "answer": answer, "correct": correct, "nll": nll, "finish": finish, "tokens": tokens, "esamp": None}


def test_aggregate_and_report(tmp_path):
    cfg = {"task": "svamp", "split": "test", "limit": 2, "n": 2, "max_new_tokens": 8, "concurrency": 2,
           "methods": [{"name": "vanilla", "sampling": {}, "extra": []}, {"name": "esamp@0.5", "sampling": {}, "extra": []},
                       {"name": "matched@0.5", "sampling": {}, "extra": []}]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    recs = [
        ("vanilla", "p1", [sample("The answer is 3", "3", True), sample("The answer is 3", "3", True)]),
        ("vanilla", "p2", [sample("The answer is 5", "5", False), sample("", None, False, nll=None, finish="stop", tokens=1)]),
        ("esamp@0.5", "p1", [sample("The answer is 3", "3", True), sample("I think 4", "4", False)]),
        ("esamp@0.5", "p2", [sample("The answer is 7", "7", True), sample("Maybe 9 apples", "9", False, nll=3.0)]),
        ("matched@0.5", "p1", [sample("x 1", "1", False), sample("x 2", "2", False)]),
        ("matched@0.5", "p2", [sample("x 1", "1", False), sample("x 2", "2", False)]),
    ]
    with open(tmp_path / "samples.jsonl", "w") as f:
        for method, problem, samples in recs:
            f.write(json.dumps({"method": method, "problem": problem, "samples": samples, "seconds": 2.0}) + "\n")
        f.write('{"method": "vanilla", "probl')  # a line cut by an interruption is ignored
    res = aggregate(tmp_path)
    assert res["problems"] == 2
    v, e = res["methods"]["vanilla"], res["methods"]["esamp@0.5"]
    assert v["pass@1"]["mean"] == pytest.approx(0.5) and v["pass@2"]["mean"] == pytest.approx(0.5)
    assert e["pass@1"]["mean"] == pytest.approx(0.5) and e["pass@2"]["mean"] == pytest.approx(1.0)
    assert v["empty"]["mean"] == pytest.approx(0.25) and v["early_stop"]["mean"] == pytest.approx(0.25)
    assert v["distinct"]["mean"] == pytest.approx(1.0) and e["distinct"]["mean"] == pytest.approx(2.0)
    assert e["ppl"]["mean"] == pytest.approx((2.718281828 + 7.389056099) / 2, rel=1e-6)
    assert v["similarity"]["mean"] == pytest.approx(1.0, abs=1e-5)  # p1: two identical texts; p2: one non-empty (nan, skipped)
    assert e["vs vanilla"]["pass@n"]["mean"] == pytest.approx(0.5)
    assert e["vs matched@0.5"]["pass@1"]["mean"] == pytest.approx(0.5)
    assert v["seconds_total"] == 4.0
    write_report(tmp_path, res)
    report = (tmp_path / "report.md").read_text()
    assert "| esamp@0.5 | 50.0 [50.0, 50.0] | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] | 2.000 [2.000, 2.000] |" in report
    assert (tmp_path / "passk.png").stat().st_size > 1000 and (tmp_path / "diversity.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["methods"]["vanilla"]["pass@1"]["mean"] == 0.5

    table = summary_table([str(tmp_path)]).splitlines()
    assert len(table) == 2 + 3 and table[3].startswith("| (defaults) | esamp@0.5 | ")
    assert table[3].endswith("| 50.0 [50.0, 50.0] | 100.0 [100.0, 100.0] |")


def _folder(path, method, texts_per_problem):
    path.mkdir()
    cfg = {"task": "creative", "split": "test", "limit": 2, "n": 2, "max_new_tokens": 8, "concurrency": 2,
           "methods": [{"name": method, "sampling": {}, "extra": []}]}
    (path / "config.json").write_text(json.dumps(cfg))
    with open(path / "samples.jsonl", "w") as f:
        for i, texts in enumerate(texts_per_problem):
            samples = [{"text": t, "nll": 1.0, "finish": "length", "tokens": 8, "esamp": None} for t in texts]
            f.write(json.dumps({"method": method, "problem": f"p{i}", "samples": samples, "seconds": 1.0}) + "\n")
    return path


def test_degenerate_rate_and_a_comparison_across_folders(tmp_path):
    soup = "and then the brightlydancingfirefliesweretwinkling all night"
    a = _folder(tmp_path / "a", "esamp@0.5", [["A dog ran home.", soup], ["A cat slept.", "The moon rose."]])
    b = _folder(tmp_path / "b", "vanilla", [["A dog ran home.", "A dog ran home."], ["A cat slept.", "The moon rose."]])
    res = aggregate(a)["methods"]["esamp@0.5"]
    assert res["degenerate"]["mean"] == pytest.approx(0.25)  # one of the four samples is soup
    assert aggregate(b)["methods"]["vanilla"]["similarity_clean"]["mean"] < 1.0
    table = compare_table(f"{a}:esamp@0.5", f"{b}:vanilla")
    assert "2 problems" in table and "| degenerate | 25.0 | 0.0 | +25.0 [+0.0, +50.0] |" in table
    with pytest.raises(ValueError, match="holds no samples of method 'esamp@1'"):
        compare_table(f"{a}:esamp@1", f"{b}:vanilla")


def test_the_archived_runs_samples_are_read_gzipped():
    """docs/results keeps its runs' samples.jsonl gzipped; the report reads them as they are."""
    from pathlib import Path

    runs = [p.parent for p in (Path(__file__).resolve().parents[2] / "docs" / "results").rglob("samples.jsonl.gz")]
    assert len(runs) >= 20
    for run in runs:
        with open_samples(run) as f:
            first = json.loads(next(f))
        assert {"method", "problem", "samples"} <= first.keys(), run
