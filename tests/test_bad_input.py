"""Bad input on the command line: one line on standard error, exit status 2, nothing written or
lost, and every error of the arguments alone answered before torch is imported."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import retain
from retain.cli import main
from retain.errors import RetainError

# runs each command line of a JSON list (stdin) through main() in one fresh process, and prints
# [exit status, standard error] for each, then whether torch was imported
_CHILD = """
import contextlib, io, json, sys
from retain.cli import main
out = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out.append([main(argv), err.getvalue()])
print(json.dumps({"results": out, "torch": "torch" in sys.modules}))
"""


def _run_out_cases(tmp_path) -> list[tuple[list[str], str]]:
    """(argv, part of the message): each a bad argument, found without torch."""
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("keep me")
    held = tmp_path / "held"  # an earlier run's results (no checkpoint)
    held.mkdir()
    (held / "results.json").write_text("{}")
    ckpt = tmp_path / "ckpt"  # a folder with a checkpoint (the state file is all the check reads)
    (ckpt / "checkpoint").mkdir(parents=True)
    (ckpt / "checkpoint" / "state.json").write_text("{}")
    data = tmp_path / "new.csv"
    data.write_text("text\na b c\n")
    preds = tmp_path / "preds.csv"
    preds.write_text("old predictions")
    # smoke, no retention: a case that got through would fail fast
    run = ["run", "--profile", "smoke", "--no-retention", "--out", str(tmp_path / "o")]
    smoke = ["run", "--profile", "smoke", "--no-retention", "--out"]
    return [
        ([*run, "--lr", "-1"], "--lr must be a number 0 or more (0 trains nothing), got -1.0"),
        ([*run, "--lr", "nan"], "--lr must be a number 0 or more (0 trains nothing), got nan"),
        ([*run, "--head-lr", "-1"], "--head-lr must be a number 0 or more"),
        ([*run, "--batch-size", "0"], "--batch-size must be 1 or more, got 0"),
        ([*run, "--epochs", "-2"], "--epochs must be 1 or more"),
        ([*run, "--max-length", "1"], "--max-length must be 2 or more"),
        ([*run, "--weight-decay", "-0.1"], "--weight-decay must be 0 or more"),
        ([*run, "--seed", "-1"], "--seed must be 0 or more"),
        ([*run, "--cap", "-1"], "--cap must be 0 or more"),
        ([*run, "--classes-per-task", "0"], "--classes-per-task must be 1 or more"),
        ([*run, "--class-order", "1,1,0"], "--class-order must list distinct"),
        ([*run, "--retention-limit", "0"], "--retention-limit must be 1 or more"),
        ([*run, "--method", "nope"], "unknown method 'nope'"),
        ([*run, "--benchmark", "nope"], "unknown benchmark 'nope'"),
        ([*run, "--data", str(tmp_path / "missing.csv")], "does not exist"),
        ([*run, "--resume"], "nothing to resume"),
        ([*run, "--method", "frozen-ncm", "--benchmark", "lm3"], "cannot serve 'lm' streams"),
        ([*run, "--benchmark", "lm3", "--head", "analytic"], "have no head; drop --head"),
        ([*run, "--benchmark", "lm3", "--kind", "classification"], "benchmark; drop --kind"),
        ([*smoke, str(a_file)], "is a file, not a folder"),
        ([*smoke, str(a_file / "sub")], "is a file, not a folder"),
        ([*smoke, str(held)], "holds an earlier run: add --resume"),
        ([*smoke, str(ckpt)], "--overwrite to replace it"),
        ([*smoke, str(ckpt), "--resume", "--overwrite"], "give one of them"),
        (["sweep", "--grid", "r=4,8", "--batch-size", "0", "--out", str(tmp_path / "s")],
         "--batch-size must be 1"),
        (["sweep", "--grid", "r=4,8", "--baseline", str(tmp_path / "no.json"), "--out",
          str(tmp_path / "s")], "--baseline"),
        (["sweep", "--grid", "r=4", "--grid", "r=8", "--out", str(tmp_path / "s")],
         "each --grid key may appear once"),
        (["sweep", "--grid", "r=", "--out", str(tmp_path / "s")], "with values"),
        (["compare", "--seeds", "0,0", "--out", str(tmp_path / "c")], "--seeds must be distinct"),
        (["compare", "--seeds", "-1", "--out", str(tmp_path / "c")], "--seeds must be distinct"),
        (["compare", "--methods", "seq-lora,nope", "--out", str(tmp_path / "c")],
         "unknown method 'nope' in --methods"),
        (["compare", "--epochs", "0", "--out", str(tmp_path / "c")], "--epochs must be 1 or more"),
        (["predict", str(tmp_path / "o"), "--data", str(data)], "holds no checkpoint"),
        (["predict", str(ckpt), "--data", str(data), "--batch-size", "0"],
         "--batch-size must be 1 or more"),
        (["predict", str(ckpt), "--data", str(data), "--task", "0"], "--task must be 1 or more"),
        (["predict", str(ckpt), "--data", str(data), "--out", str(preds)],
         "exists: add --overwrite"),
        (["predict", str(ckpt), "--data", str(data), "--out", str(data), "--overwrite"],
         "is the --data input"),
        (["predict", str(ckpt), "--data", str(data), "--out", str(tmp_path / "p.txt")],
         "unknown output format '.txt'"),
        (["predict", str(ckpt), "--data", str(tmp_path / "none.csv")], "does not exist"),
        (["export", str(ckpt), "--to", str(ckpt / "export")], "lies inside it"),
        (["export", str(ckpt), "--to", str(a_file)], "is a file, not a folder"),
    ]


def test_argument_errors_come_before_torch_and_touch_nothing(tmp_path):
    cases = _run_out_cases(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps([a for a, _ in cases]),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.splitlines()[-1])
    for (argv, message), (code, err) in zip(cases, answer["results"], strict=True):
        assert code == 2 and err.startswith("retain: error: ") and message in err, (argv, err)
        assert err.count("\n") == 1, (argv, err)
    assert not answer["torch"], "an argument error imported torch"
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing lost
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_the_python_api_refuses_the_same_values(tiny_config):
    for field, value in (("lr", -1.0), ("head_lr", -1.0), ("batch_size", 0),
                         ("weight_decay", float("inf")), ("max_length", 1)):
        with pytest.raises(RetainError, match="must be"):
            dataclasses.replace(tiny_config(), **{field: value}).resolved()
    with pytest.raises(RetainError, match="^seeds must be distinct"):
        retain.compare(tiny_config(), methods="frozen-ncm", seeds=[1, 1])


def test_unknown_options_name_the_options_not_the_class(capsys, tmp_path):
    from retain.methods import get_method_class

    base = ["run", "--profile", "smoke", "--out", str(tmp_path / "o")]
    assert main([*base, "--set", "foo=1"]) == 2
    err = capsys.readouterr().err
    names = [f.name for f in dataclasses.fields(get_method_class("seq-lora").config_class)]
    assert f"unknown option 'foo' for seq-lora: the options are {', '.join(names)}" in err
    assert "Options" not in err and "Config" not in err and err.count("\n") == 1
    assert main([*base, "--method", "frozen-ncm", "--set", "foo=1"]) == 2
    assert "frozen-ncm takes no options: drop --set foo" in capsys.readouterr().err
    assert main([*base, "--method", "frozen-ncm", "--head", "analytic", "--head-set",
                 "foo=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'foo' for analytic" in err and "--head-set KEY=VALUE" in err
    assert not (tmp_path / "o").exists()


def test_too_little_text_says_how_many_tokens_and_what_lowers_the_need():
    from transformers import AutoTokenizer

    from retain.backbones import smollm2_tokenizer_dir
    from retain.data.lm3 import MIN_SEQUENCES, lm_stream, split_sequences
    from retain.profiles import LM_PROFILES

    # the constant the message quotes is the fewest sequences split_sequences makes a task of
    for n in (MIN_SEQUENCES - 1, MIN_SEQUENCES):
        train, test = split_sequences(np.zeros((n, 4), int), None, None)
        assert (len(train) > 0 and len(test) > 0) == (n == MIN_SEQUENCES)
    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    text = "only a few words of text here"
    tokens = len(tok(text, add_special_tokens=False)["input_ids"]) + 1  # and its EOS
    profile = dataclasses.replace(LM_PROFILES["smoke"], max_length=16)
    with pytest.raises(RetainError) as e:
        lm_stream("mine", {"notes": [text]}, tok, profile)
    assert str(e.value) == (
        f"task 1 (notes) has {tokens} tokens, too few for one train and one test sequence of 16 "
        f"tokens (it needs {MIN_SEQUENCES} sequences, {MIN_SEQUENCES * 16} tokens): add text, "
        "or lower --max-length")


def test_predict_and_export_never_overwrite_unasked(capsys, tmp_path, tiny_bert, jsonl_file):
    """A finished run; then predict --out onto an existing file, onto its own input, and export
    into the run: refused and nothing changed; --overwrite replaces the predictions file."""
    run = tmp_path / "run"
    assert main(["run", "--method", "frozen-ncm", "--data", jsonl_file, "--classes-per-task", "2",
                 "--backbone", tiny_bert, "--profile", "smoke", "--no-retention", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    preds = tmp_path / "preds.csv"
    preds.write_text("mine")
    data_before = open(jsonl_file, "rb").read()
    for argv, message in (
            (["--out", str(preds)], "exists: add --overwrite"),
            (["--out", jsonl_file, "--overwrite"], "is the --data input")):
        assert main(["predict", str(run), "--data", jsonl_file, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert preds.read_text() == "mine" and open(jsonl_file, "rb").read() == data_before
    assert main(["predict", str(run), "--data", jsonl_file, "--out", str(preds),
                 "--overwrite"]) == 0
    assert preds.read_text().startswith("text,label,class,score")
    assert not list(tmp_path.glob(".preds.csv*"))  # no temporary file left behind
    listing = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["export", str(run), "--to", str(run / "exported")]) == 2
    assert "lies inside it" in capsys.readouterr().err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == listing


def test_run_overwrite_replaces_only_the_runs_own_files(capsys, tmp_path, tiny_bert, jsonl_file):
    """--overwrite removes the earlier run's checkpoint and results only; a batch larger than
    every task is run, with a note; the summary names the backbone."""
    out = tmp_path / "run"
    argv = ["run", "--method", "frozen-ncm", "--data", jsonl_file, "--classes-per-task", "2",
            "--backbone", tiny_bert, "--profile", "smoke", "--no-retention", "--quiet",
            "--out", str(out), "--batch-size", "1000"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "note: --batch-size 1000 is more than any task's training items (at most 16)" \
        in captured.err
    assert f"(head: prototypes; backbone: {tiny_bert})" in captured.out
    first = (out / "results.json").read_text()
    (out / "notes.txt").write_text("keep")
    (out / "checkpoint" / "mine.txt").write_text("keep too")
    assert main(argv) == 2  # an earlier run: refused, untouched
    assert "holds an earlier run" in capsys.readouterr().err
    assert (out / "results.json").read_text() == first
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["matrix"] == json.loads(first)["matrix"]
    assert (out / "notes.txt").read_text() == "keep"
    assert (out / "checkpoint" / "mine.txt").read_text() == "keep too"


def test_clear_run_removes_the_checkpoint_files_and_the_empty_folder(tmp_path):
    from retain.api import _clear_run

    out = tmp_path / "out"
    (out / "checkpoint").mkdir(parents=True)
    for name in ("state.json", "weights-003.safetensors", "weights-002.safetensors.tmp"):
        (out / "checkpoint" / name).write_text("{}")
    (out / "results.json").write_text("{}")
    (out / "results.json.bak").write_text("mine")
    _clear_run(out)
    assert sorted(p.name for p in out.iterdir()) == ["results.json.bak"]


def test_summary_names_a_random_backbone():
    from retain.summary import format_table

    results = {"method": "seq-lora", "stream": "lm3/smoke", "head": "none",
               "config": {"backbone": "tiny-llama"}, "metrics": {}, "cost": {},
               "score": {"name": "perplexity", "direction": "lower"}}
    assert format_table(results).splitlines()[0] == (
        "seq-lora on lm3/smoke (head: none; backbone: tiny-llama, random weights)")
    results["config"]["backbone"] = "minilm"
    assert format_table(results).splitlines()[0].endswith("(head: none; backbone: minilm)")


def test_a_sequence_longer_than_the_backbone_takes_is_refused(tiny_config):
    """The tiny BERT has 512 positions: 700 tokens would fail inside the first forward."""
    cfg = tiny_config(max_length=700)
    with pytest.raises(RetainError, match=r"^(--max-length|max_length) 700 is more than "
                                          r".* \(512 positions\)"):
        retain.run(cfg, progress=False)
    assert not os.path.exists(os.path.join(cfg.out, "checkpoint"))
