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
    line = next(ln for ln in out.splitlines() if ln.startswith("where the time went: "))
    for part in ("start-up", "training", "task-boundary passes", "head statistics and solves",
                 "evaluation"):
        assert f"{part} " in line
    # frozen-ncm trains nothing; its boundaries are the prototypes' pass and sums
    assert "training 0.0 s" in line and res["cost"]["head_seconds"] <= res["cost"][
        "boundary_seconds"]


def _csv(path, counts: dict[str, int]) -> str:
    lines = ["text,label"] + [f"{c} item {i},{c}" for c, n in counts.items() for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_more_bad_input_is_one_line_with_status_2(capsys, tmp_path, tiny_bert):
    """The inputs a new user hit that got through before: each one line, status 2."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("no images here")
    single = _csv(tmp_path / "single.csv", {"a": 6, "b": 6, "c": 1, "d": 6})
    odd = _csv(tmp_path / "odd.csv", {"a": 6, "b": 6, "c": 6, "d": 6, "e": 6})
    one = _csv(tmp_path / "one.csv", {"a": 6})
    two = _csv(tmp_path / "two.csv", {"a": 2, "b": 6})
    base = ["run", "--profile", "smoke", "--no-retention", "--quiet", "--backbone", tiny_bert]
    cases = [
        (["--backbone", str(tmp_path / "empty")], "has no config.json"),
        (["--data", str(tmp_path / "folder")], "0 class folder"),
        (["--data", single, "--classes-per-task", "2"], "class 'c' has no test items"),
        (["--data", odd, "--classes-per-task", "2"], "last task would hold one class ('e'"),
        (["--data", one], "the data hold one class ('a'): a classifier needs at least 2"),
        (["--data", two, "--classes-per-task", "2"], "class 'a' has no test items (2 in all): "
                                                     "give every class at least 3 examples"),
        (["--epochs", "0"], "epochs must be 1 or more"),
        (["--resume"], "nothing to resume"),
    ]
    for n, (args, message) in enumerate(cases):
        code = main([*base, "--out", str(tmp_path / f"o{n}"), *args])
        err = capsys.readouterr().err
        assert (code, message in err, err.count("\n")) == (2, True, 1), (args, err)
        assert not (tmp_path / f"o{n}").exists()  # nothing written, nothing lost
    for args, message in ((["predict", str(tmp_path / "empty"), "--data", odd], "no checkpoint"),
                          (["list", "nope"], "neither a method nor a head")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_resume_says_where_it_picks_up(capsys, tmp_path, tiny_bert, jsonl_file, monkeypatch):
    from retain.methods import get_method_class
    from tests.conftest import crash_on_task

    args = ["run", "--data", jsonl_file, "--classes-per-task", "2", "--profile", "smoke",
            "--backbone", tiny_bert, "--no-retention", "--out", str(tmp_path / "o"),
            "--method", "frozen-ncm", "--quiet"]  # --quiet hides the bars, not the resume line
    restore = crash_on_task(monkeypatch, get_method_class("frozen-ncm"), 1)
    assert main(args) == 130
    restore()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "1 of 3 tasks done, picking up at task 2" in capsys.readouterr().err


def test_list_is_light_and_shows_options(capsys):
    import subprocess
    import sys

    code = ("import sys; from retain.cli import main; main(['list']); "
            "assert 'torch' not in sys.modules, 'retain list imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "plate" in proc.stdout and "analytic" in proc.stdout
    assert main(["list", "plate"]) == 0
    out = capsys.readouterr().out
    assert "r=8: trainable output neurons" in out and "default --lr: 0.0005" in out
    assert "(language modelling: 0.003)" in out
    assert "defaults on language modelling streams: selection=official" in out
    assert main(["list", "grow"]) == 0  # each kind's own defaults, named by the kind
    assert "defaults on classification streams: select=spread" in capsys.readouterr().out
    assert main(["list", "analytic"]) == 0
    assert "projection=5000" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "retain", "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("retain 0.")


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "(default: wordnet45)" in out and "(default: quick)" in out
    assert "--no-retention" in out and "(default: True)" not in out


def test_compare_takes_one_head_for_every_method():
    from retain.cli import build_parser, config_from_args

    args = build_parser().parse_args(["compare", "--methods", "seq-lora,plate", "--head",
                                      "analytic"])
    assert config_from_args(args).head == "analytic"
    assert config_from_args(build_parser().parse_args(["compare"])).head is None


def test_the_authors_presets_load_as_configs():
    """examples/presets: the authors' settings as `retain run --config` files."""
    from pathlib import Path

    from retain.config import RunConfig

    folder = Path(__file__).resolve().parents[1] / "examples" / "presets"
    share = RunConfig.from_toml(folder / "share-authors.toml").resolved()
    assert (share.method, share.lr, share.weight_decay, share.warmup_ratio) == (
        "share", 4e-3, 0.1, 0.06)
    plate = RunConfig.from_toml(folder / "plate-authors-config.toml").resolved()
    assert {k: plate.method_options[k] for k in ("r", "tau", "alpha", "selection")} == {
        "r": 8, "tau": 0.9, "alpha": 0.5, "selection": "official"}


def test_every_method_and_head_option_parses_from_its_command_line_text():
    """Each option of every method and head, given as the text `--set KEY=VALUE` (or a config
    file's string) would carry, resolves to a value of its type: the default's text gives the
    default back; an `X | None` option is converted as X (issue 38: schedule_tasks=3 crashed)."""
    import dataclasses

    from retain.catalogue import METHODS
    from retain.methods import get_method_class
    from retain.methods.heads import HEAD_CONFIGS

    classes = [get_method_class(m).config_class for m in METHODS] + list(HEAD_CONFIGS.values())
    checked = 0
    for cls in classes:
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            if default is None:
                text, expected = "3", 3 if str(f.type).startswith("int") else None
                if expected is None:
                    continue
            elif isinstance(default, list | tuple):
                text, expected = ",".join(map(str, default)), list(default)
            else:
                text, expected = str(default), default
            value = getattr(cls.from_options({f.name: text}), f.name)
            assert value == expected and type(value) is type(expected), (cls, f.name, value)
            checked += 1
    assert checked > 40
    from retain.methods.inflora import InfLoRAConfig

    assert InfLoRAConfig.from_options({"schedule_tasks": "none"}).schedule_tasks is None
