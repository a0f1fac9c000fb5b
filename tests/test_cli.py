"""The command line: one-line errors with exit status 2, `retain list`, the final table."""

import json

import pytest

from retain.cli import main


def test_list_shows_methods_and_benchmarks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("seq-ft", "seq-lora", "frozen-ncm", "joint", "wordnet45"):
        assert name in out


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--benchmark", "nope"], "unknown benchmark 'nope'"),
    (["--data", "/nonexistent/file.csv"], "does not exist"),
    (["--set", "rank=abc"], "does not parse"),
])
def test_errors_are_one_line_with_status_2(capsys, tmp_path, args, message):
    code = main(["run", "--profile", "smoke", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_label_and_empty_task_from_the_cli(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": null}\n')
    assert main(["run", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "does not parse" in capsys.readouterr().err
    thin = tmp_path / "thin.jsonl"
    thin.write_text("\n".join(json.dumps({"text": f"t{i}", "label": i}) for i in range(3)))
    assert main(["run", "--data", str(thin), "--out", str(tmp_path / "o")]) == 2
    assert "no test items" in capsys.readouterr().err


def test_run_prints_the_summary_table(capsys, tiny_bert, jsonl_file, tmp_path):
    code = main(["run", "--method", "frozen-ncm", "--data", jsonl_file, "--classes-per-task",
                 "3", "--backbone", tiny_bert, "--profile", "smoke", "--no-retention",
                 "--quiet", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0
    assert "final accuracy" in out and "forgetting" in out
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["config"]["classes_per_task"] == 3 and len(res["matrix"]) == 2
