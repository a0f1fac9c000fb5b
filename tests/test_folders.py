"""Run folders: one writer at a time (a lock a crashed run does not leave behind for ever), no
output inside a run's folder, and comparisons replaced only when asked (issue 38)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import retain
from retain.checkpoint import LOCK, owned
from retain.errors import RetainError


def test_a_run_folder_has_one_writer_and_a_dead_writers_lock_is_taken_over(tiny_config):
    cfg = tiny_config(method="frozen-ncm")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tiny_config().out + "/" + LOCK
        import os

        os.makedirs(cfg.out, exist_ok=True)
        with open(lock, "w") as f:
            f.write(f"{socket.gethostname()} {other.pid}")
        with pytest.raises(RetainError, match=f"being written by another retain process "
                                              f"\\(pid {other.pid}"):
            retain.run(cfg, progress=False)
        assert not os.path.exists(os.path.join(cfg.out, "results.json"))
    finally:
        other.kill()
        other.wait()
    retain.run(cfg, progress=False)  # its writer is gone: the lock is taken over
    assert os.path.exists(os.path.join(cfg.out, "results.json"))
    assert not os.path.exists(lock)  # and released at the end


def test_the_lock_is_atomic_and_reentrant(tmp_path):
    with owned(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK).read_text().endswith(str(__import__("os").getpid()))
        with owned(tmp_path / "run"):  # the same process again: allowed
            pass
        assert (tmp_path / "run" / LOCK).exists()
    assert not (tmp_path / "run" / LOCK).exists()


def test_no_output_inside_a_run_folder(tiny_config, tmp_path):
    from retain.checks import check_folder
    from retain.cli import main

    cfg = tiny_config(method="frozen-ncm")
    retain.run(cfg, progress=False)
    for inside in ("checkpoint", "checkpoint/x", "test", "other"):
        with pytest.raises(RetainError, match="lies inside the run"):
            retain.run(tiny_config(method="frozen-ncm", out=f"{cfg.out}/{inside}"),
                       progress=False)
    check_folder(f"{cfg.out}/eval", inside_run=True)  # evaluate --out RUN/eval, as documented
    with pytest.raises(RetainError, match="lies inside the run"):
        check_folder(f"{cfg.out}/checkpoint/eval", inside_run=True)
    # compare --runs: an earlier comparison is replaced only with --overwrite
    out = str(tmp_path / "cmp")
    assert main(["compare", "--runs", cfg.out, "--out", out]) == 0
    assert main(["compare", "--runs", cfg.out, "--out", out]) == 2
    assert main(["compare", "--runs", cfg.out, "--out", out, "--overwrite"]) == 0


def test_values_of_the_wrong_type_are_one_line_errors(tmp_path, tiny_config):
    """A config file's `lr = "fast"` or the API's lr="fast": a RetainError naming the field,
    not a TypeError deep in the run; LoRA's rank and dropout checked when resolved."""
    from retain.cli import main
    from retain.config import RunConfig

    with pytest.raises(RetainError, match="lr must be float, got 'fast'"):
        RunConfig(lr="fast").check()
    with pytest.raises(RetainError, match="steps must be int, got True"):
        RunConfig(steps=True).check()
    path = tmp_path / "bad.toml"
    path.write_text('method = "seq-lora"\nlr = "fast"\n')
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    for options, message in (({"rank": "0"}, "rank must be 1 or more"),
                             ({"dropout": "2"}, r"dropout must lie in \[0, 1\)")):
        with pytest.raises(RetainError, match=message):
            tiny_config(method_options=options).resolved()


def test_the_inference_measurement_can_be_skipped_and_the_time_rows_add_up(tiny_config):
    from retain.summary import summary_row

    res = retain.run(tiny_config(method="frozen-ncm", inference_rounds=0), progress=False)
    row = summary_row(res)
    assert "inference_ratio" not in res["cost"] and row.get("inference_ratio") is None
    parts = ("startup_seconds", "tasks_seconds", "retention_seconds", "inference_seconds")
    assert row["wall_seconds"] == pytest.approx(sum(row[k] for k in parts))
    with pytest.raises(RetainError, match="0 \\(no measurement\\) or 2 or more"):
        tiny_config(inference_rounds=1).check()


def test_spreadsheet_files_and_a_language_model_file_given_as_classification(tmp_path):
    from retain.data.files import read_records, rows_with

    bom = tmp_path / "bom.csv"
    bom.write_bytes("text,label\na cat,animal\n".encode("utf-8-sig"))
    assert read_records(bom) == [{"text": "a cat", "label": "animal"}]
    semi = tmp_path / "semi.csv"
    semi.write_text("text;label\na cat, small;animal\n")
    assert read_records(semi) == [{"text": "a cat, small", "label": "animal"}]
    other = tmp_path / "other.csv"
    other.write_text("sentence;label\na cat;animal\n")
    with pytest.raises(RetainError, match="read as CSV separated by ';'"):
        rows_with(str(other), ("text", "label"), "")
    lm = tmp_path / "lm.csv"
    lm.write_text("text,task\nsome words here,a\n")
    with pytest.raises(RetainError, match="add --kind lm"):
        rows_with(str(lm), ("text", "label"), "")


def test_predict_and_evaluate_check_their_data_before_any_model(tiny_config, tmp_path):
    """An empty file, a task the run has not learnt, a label that is none of its classes:
    refused in one line from the checkpoint's outline, without importing torch."""
    import json

    from tests.test_bad_input import _CHILD

    cfg = tiny_config(method="frozen-ncm")
    retain.run(cfg, progress=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\nthe dog,animal\na song,opera\n")
    cases = [(["predict", cfg.out, "--data", str(empty)], "nothing to predict"),
             (["predict", cfg.out, "--data", str(rows), "--task", "99"],
              "--task must be between 1 and 3"),
             (["evaluate", cfg.out, "--data", str(rows)], "row 2: label 'opera' is not a class"),
             (["evaluate", cfg.out, "--data", str(empty)], "nothing to evaluate")]
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          input=json.dumps([argv for argv, _ in cases]))
    answer = json.loads(proc.stdout.splitlines()[-1])
    for (argv, message), (code, err) in zip(cases, answer["results"], strict=True):
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    assert not answer["torch"]


def test_exports_and_checkpoints_are_ordinary_files_naming_the_hub_model(tiny_config,
                                                                          tmp_path):
    import json
    import os
    import stat

    from retain.catalogue import HUB_IDS

    cfg = tiny_config(method="seq-lora")
    retain.run(cfg, progress=False)
    dest = retain.load(cfg.out).export(tmp_path / "export")
    mask = os.umask(0)
    os.umask(mask)
    files = [*dest.rglob("*"), *(tmp_path / "run" / "checkpoint").glob("*")]
    for p in [dest, *files]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~mask, (p, oct(mode))
    config = json.loads((dest / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == cfg.backbone  # a local path stays one
    assert HUB_IDS["minilm"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_a_lora_rank_wider_than_its_layers_is_refused(tiny_config):
    """The tiny BERT is 32 wide: rank 64 would store more numbers than a full update."""
    with pytest.raises(RetainError, match="LoRA rank 64 is more than the narrowest adapted "
                                          "layer.s width .*: give .*rank=32 or less"):
        retain.run(tiny_config(method_options={"rank": 64}), progress=False)


@pytest.mark.parametrize("method,option", [("inflora", "rank"), ("share", "p")])
def test_every_rank_like_option_wider_than_its_layers_is_refused(tiny_config, method, option):
    """InfLoRA's rank and Share's p, like LoRA's rank: one line naming the widest allowed (Share's
    k is clipped to a layer's width: its basis has no more directions)."""
    with pytest.raises(RetainError, match=f"{method} {option} 64 is more than the narrowest "
                                          f"adapted layer.s width .*: give .*{option}=32 or less"):
        retain.run(tiny_config(method=method, method_options={option: 64}), progress=False)
