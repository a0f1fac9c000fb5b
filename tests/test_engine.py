"""The per-task loop on a tiny BERT: results, every baseline, checkpoints and resume."""

import json
from pathlib import Path

import pytest
import torch

from retain import RunConfig, run
from retain.engine import build_method
from retain.errors import RetainError
from retain.methods import REGISTRY, get_method_class

KEYS = {"method", "config", "class_order", "accuracy_matrix", "task_incremental_accuracy_matrix",
        "metrics", "retention", "cost", "versions"}


def test_results_hold_everything_the_issue_lists(tiny_config):
    res = run(tiny_config(), progress=False)
    assert KEYS <= set(res)
    assert set(res["metrics"]) >= {"final_accuracy", "average_incremental_accuracy",
                                   "forgetting", "bwt", "plasticity"}
    assert set(res["cost"]) >= {"trainable_parameters", "stored_parameters", "train_seconds",
                                "boundary_seconds", "median_step_seconds", "peak_memory_mb"}
    assert [len(r) for r in res["accuracy_matrix"]] == [1, 2, 3]
    assert res["config"]["lr"] == get_method_class("seq-lora").default_lr  # resolved
    assert res["config"]["method_options"]["rank"] == 8
    saved = json.loads((Path(res["config"]["out"]) / "results.json").read_text())
    assert saved["accuracy_matrix"] == res["accuracy_matrix"]
    assert saved["class_order"] == res["class_order"] and len(res["class_order"]) == 6


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_runs(tiny_config, method):
    res = run(tiny_config(method=method), progress=False)
    assert all(0.0 <= a <= 1.0 for row in res["accuracy_matrix"] for a in row)
    assert res["method"] == method


def test_frozen_ncm_trains_nothing_and_keeps_the_backbone(tiny_config):
    res = run(tiny_config(method="frozen-ncm", retention=True), progress=False)
    assert res["cost"]["trainable_parameters"] == 0 and res["cost"]["steps"] == 0
    assert all(v["ratio"] == pytest.approx(1.0) for v in res["retention"].values())


def test_seq_lora_trains_adapters_only(tiny_config, tiny_bert):
    from retain.backbones import load_backbone
    from retain.data import build_stream

    cfg = tiny_config().resolved()
    stream = build_stream(cfg)
    method = build_method(cfg)
    method.prepare(load_backbone(tiny_bert), stream)
    task = stream.tasks[0]
    method.begin_task(task, lambda: [])
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    opt = torch.optim.AdamW([p for g in method.trainable_parameters() for p in g["params"]],
                            lr=1e-2)
    batch = method.backbone.tokenize(task.train.texts[:8], 16)
    batch["labels"] = torch.as_tensor(task.train.labels[:8])
    for _ in range(2):  # lora_B starts at zero, so lora_A moves from the second step on
        method(batch).backward()
        opt.step()
        opt.zero_grad()
    after = dict(method.named_parameters())
    for name, old in before.items():
        moved = not torch.equal(old, after[name])
        assert moved == (name in trainable), name


def test_joint_trains_once_on_everything(tiny_config):
    res = run(tiny_config(method="joint"), progress=False)
    steps = [p["steps"] for p in res["per_task"]]
    assert steps[:2] == [0, 0] and steps[2] > 0


def test_resume_after_a_crash_reaches_the_same_results(tiny_config, monkeypatch, tmp_path):
    full = run(tiny_config(out=str(tmp_path / "full")), progress=False)
    cls = get_method_class("seq-lora")
    original = cls.end_task

    def crash_on_third(self, task, batches):
        if task.index == 2:
            raise KeyboardInterrupt
        return original(self, task, batches)

    monkeypatch.setattr(cls, "end_task", crash_on_third)
    cfg = tiny_config(out=str(tmp_path / "crashed"))
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    state = json.loads((tmp_path / "crashed" / "checkpoint" / "state.json").read_text())
    assert state["tasks_done"] == 2
    assert not list((tmp_path / "crashed" / "checkpoint").glob("*.tmp"))
    monkeypatch.setattr(cls, "end_task", original)
    with pytest.raises(RetainError, match="--resume"):
        run(cfg, progress=False)
    resumed = run(cfg, resume=True, progress=False)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert resumed["task_incremental_accuracy_matrix"] == full["task_incremental_accuracy_matrix"]


def test_resume_refuses_another_config(tiny_config):
    run(tiny_config(), progress=False)
    with pytest.raises(RetainError, match="different config.*lr"):
        run(tiny_config(lr=1e-3), resume=True, progress=False)


def test_checkpoint_from_another_model_is_refused(tiny_config, tmp_path):
    run(tiny_config(method="frozen-ncm", head="growing"), progress=False)
    state_path = Path(tiny_config().out) / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    state["config"]["method"] = "seq-lora"
    state["config"]["lr"] = 5e-4
    state["config"]["method_options"] = RunConfig(method="seq-lora").resolved().method_options
    state["tasks_done"] = 1
    state_path.write_text(json.dumps(state))
    with pytest.raises(RetainError, match="does not fit"):
        run(tiny_config(method="seq-lora", head="growing"), resume=True, progress=False)


def test_unknown_target_module_names_the_layers(tiny_config):
    with pytest.raises(RetainError, match="not found.*query"):
        run(tiny_config(method_options={"target_modules": "q_proj"}), progress=False)


def test_unknown_option_is_refused(tiny_config):
    with pytest.raises(RetainError, match="unknown option 'rnak'"):
        run(tiny_config(method_options={"rnak": "4"}), progress=False)


def test_task_scenario_reports_task_incremental_accuracy(tiny_config):
    res = run(tiny_config(scenario="task", method="frozen-ncm"), progress=False)
    assert res["accuracy_matrix"] == res["task_incremental_accuracy_matrix"]
    assert "class_incremental_accuracy_matrix" in res


def test_two_processes_share_the_work(tiny_bert, jsonl_file, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "mp"
    # torchrun starts a gloo process group that accelerate's Accelerator joins (MULTI_CPU)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "-m", "retain.cli", "run", "--method", "seq-lora", "--data", jsonl_file,
           "--classes-per-task", "2", "--backbone", tiny_bert, "--profile", "smoke",
           "--no-retention", "--quiet", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("seq-lora on") == 1  # the table comes from the main process only
    res = json.loads((out / "results.json").read_text())
    assert res["cost"]["processes"] == 2
    # every test item is counted once: accuracies are multiples of 1/4 (4 test items a task)
    assert all(abs(a * 4 - round(a * 4)) < 1e-9 for row in res["accuracy_matrix"] for a in row)
