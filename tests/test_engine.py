"""The per-task loop on a tiny BERT: results, every baseline, checkpoints and resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retain import RunConfig, run
from retain.data.stream import Split
from retain.engine import _accelerator, train_stream
from retain.errors import RetainError
from retain.methods import REGISTRY, get_method_class
from tests.conftest import crash_on_task

KEYS = {"method", "config", "class_order", "matrix", "task_incremental_matrix",
        "metrics", "retention", "cost", "versions"}


def test_results_hold_everything_the_issue_lists(tiny_config):
    res = run(tiny_config(retention=True), progress=False)
    assert KEYS <= set(res)
    assert set(res["metrics"]) >= {"final_accuracy", "average_incremental_accuracy",
                                   "forgetting", "bwt", "plasticity"}
    assert set(res["cost"]) >= {"trainable_parameters", "stored_parameters", "train_seconds",
                                "boundary_seconds", "median_step_seconds", "peak_memory_mb"}
    assert [len(r) for r in res["matrix"]] == [1, 2, 3]
    assert res["config"]["lr"] == get_method_class("seq-lora").info.default_lr  # resolved
    assert res["config"]["method_options"]["rank"] == 8
    saved = json.loads((Path(res["config"]["out"]) / "results.json").read_text())
    assert saved["matrix"] == res["matrix"]
    assert saved["class_order"] == res["class_order"] and len(res["class_order"]) == 6
    for name in ("wordsim353", "simlex999", "lee", "embedding_drift"):
        r = res["retention"][name]
        assert r["ratio"] == pytest.approx(r["score"] / r["untouched"])


def recompute_last_rows(method, cfg, bf16: bool = False) -> tuple[list[float], list[float]]:
    """The last row of the class- and task-incremental accuracy matrices, recomputed outside the
    engine from ``method.predict`` on each task's test items (argmax over all classes; over the
    task's own classes), in the engine's batches and precision."""

    plan = cfg.plan()
    cfg = plan.config
    method.eval()
    cil, til = [], []
    for task in plan.build_stream().tasks:
        texts, labels = [it["text"] for it in task.test.items], torch.as_tensor(task.test.labels)
        classes = torch.as_tensor(task.classes)
        hits = torch.zeros(2)
        for i in range(0, len(texts), cfg.batch_size):
            batch = method.backbone.tokenize(texts[i:i + cfg.batch_size], cfg.max_length)
            y = labels[i:i + cfg.batch_size]
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits = method.predict(batch).float()
                own = (method.predict(batch, task_id=task.index).float()
                       if method.info.task_aware_prediction else logits)
            hits += torch.tensor([(logits.argmax(-1) == y).sum().item(),
                                  (classes[own[:, classes].argmax(-1)] == y).sum().item()])
        cil.append(float(hits[0]) / len(texts))
        til.append(float(hits[1]) / len(texts))
    return cil, til


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_runs(tiny_config, method):
    check_method_runs(tiny_config(method=method), method)


def check_method_runs(cfg, method: str) -> None:
    """The matrices the engine reports are the ones its trained method gives: the last rows
    recomputed independently match, and the headline figures follow from the matrices."""
    res, trained = train_stream(cfg, progress=False)
    assert res["method"] == method
    assert [len(r) for r in res["matrix"]] == [1, 2, 3]
    cil, til = recompute_last_rows(trained, cfg)
    assert res["matrix"][-1] == cil
    assert res["task_incremental_matrix"][-1] == til
    assert res["metrics"]["final_accuracy"] == pytest.approx(sum(cil) / 3)
    diagonal = [res["matrix"][t][t] for t in range(3)]
    if trained.info.continual:
        assert res["metrics"]["plasticity"] == pytest.approx(sum(diagonal) / 3)
    # the checkpoint holds what stored_parameters counts; beyond it only the tensors a method
    # names in recomputed_tensors (kept for an exact resume); PLATE keeps its row indices in
    # the state (JSON), counted but not a tensor
    from safetensors import safe_open

    path = next((Path(cfg.out) / "checkpoint").glob("*.safetensors"))
    with safe_open(str(path), "pt") as f:
        sizes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    numbers = {k: int(np.prod(s)) if s else 1 for k, s in sizes.items()}
    extra = sum(n for k, n in numbers.items()
                if any(part in k for part in trained.info.recomputed_tensors))
    indices = sum(len(r) for r in getattr(trained, "touched", {}).values())
    assert sum(numbers.values()) - extra + indices == res["cost"]["stored_parameters"]


@pytest.mark.parametrize("method, embedded", [("frozen-ncm", [1, 1, 1]),
                                              ("first-session", [1, 1, 1]),
                                              ("seq-lora", [1, 2, 3])])
def test_a_test_item_is_embedded_once_while_its_features_cannot_change(tiny_config, monkeypatch,
                                                                       method, embedded):
    """Evaluation after task t embeds the test items of the tasks whose features may have
    moved: a frozen backbone embeds each task's test set once in the run (first-session after
    its first task too); a backbone that trains, every task's after every task. The matrices
    equal those evaluated without keeping anything."""
    from retain.loop import Engine
    from retain.methods.base import ContinualMethod

    counts, evaluating = [], [False]
    original_eval, original_features = Engine.evaluate, ContinualMethod.features

    def evaluate(self, tasks):
        counts.append(0)
        evaluating[0] = True
        try:
            return original_eval(self, tasks)
        finally:
            evaluating[0] = False

    def features(self, batch):
        if evaluating[0]:
            counts[-1] += len(batch["labels"])
        return original_features(self, batch)

    monkeypatch.setattr(Engine, "evaluate", evaluate)
    monkeypatch.setattr(ContinualMethod, "features", features)
    kept = run(tiny_config(method=method), progress=False)
    sizes = [t["test"] for t in kept["tasks"]]
    assert counts == [sum(sizes[t - n + 1:t + 1]) for t, n in enumerate(embedded)]
    monkeypatch.setattr("retain.loop.features_reusable", lambda method: False)
    fresh = run(tiny_config(method=method, out=kept["config"]["out"] + "-fresh"),
                progress=False)
    assert fresh["matrix"] == kept["matrix"]


def test_unshuffled_batches_come_shortest_first_and_keep_positions(tiny_config):
    """Statistics passes and evaluation read the data shortest item first (less padding); each
    item comes once with its position in the data; training batches stay shuffled."""
    from retain.loop import Engine

    cfg = tiny_config(method="frozen-ncm")
    _, method = train_stream(cfg, progress=False)
    stream = cfg.plan().build_stream(method.backbone)
    engine = Engine(cfg.resolved(), stream, method.backbone, method, _accelerator(cfg), False)
    rng = np.random.default_rng(0)
    words = [" ".join(["word"] * int(n)) for n in rng.integers(1, 12, 30)]
    split = Split([{"text": w} for w in words], rng.integers(0, 6, 30))
    lengths = method.backbone.lengths(split.items, cfg.resolved().max_length)
    assert len(set(lengths)) > 5
    batches = list(engine.loader([split], even=False))
    seen = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(seen) == list(range(len(split.items)))
    got = [lengths[i] for i in seen]
    assert got == sorted(lengths)
    assert all(b["attention_mask"].sum(1).max() == b["input_ids"].shape[1] for b in batches)
    for b in batches:  # each item's label travels with it
        assert b["labels"].tolist() == [int(split.labels[i]) for i in b["index"]]
    shuffled = torch.cat([b["index"] for b in engine.loader([split], shuffle=True)]).tolist()
    assert shuffled != seen and sorted(shuffled) == sorted(seen)


@pytest.mark.parametrize("method", ["seq-lora", "grow", "ntk-cl"])
def test_inference_cost_times_the_untouched_and_the_deployed_model(method, tiny_config,
                                                                   tiny_bert, monkeypatch):
    """The two timed forwards are the right models: the untouched backbone (a fresh copy's
    features), and the model as deployed (merged by peft, grown MLPs merged, or NTK-CL as it
    runs), whose features are the trained method's."""
    from retain import inference
    from retain.backbones import load_backbone

    outputs, timer = [], inference.paired_seconds

    def spy(forwards, batch, accelerator, **kw):
        with torch.no_grad():
            outputs.extend(forwards[k](batch).float() for k in ("untouched", "deployed"))
        return timer(forwards, batch, accelerator, rounds=(2, 2), warmup=0)

    monkeypatch.setattr(inference, "paired_seconds", spy)
    cfg = tiny_config(method=method)
    res, trained = train_stream(cfg, progress=False)
    untouched, deployed = outputs
    batch = inference.probe_batch(cfg.plan().build_stream(), trained.backbone,
                                  cfg.resolved().batch_size, cfg.resolved().max_length,
                                  torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(untouched, load_backbone(tiny_bert).features(batch), atol=1e-6)
        assert torch.allclose(deployed, trained.features(batch), atol=1e-5)
    # the training is in it (NTK-CL's fused feature is wider than the backbone's)
    assert deployed.shape != untouched.shape or not torch.allclose(deployed, untouched, atol=1e-4)
    cost = res["cost"]
    assert cost["inference_path"] == ("as trained" if method == "ntk-cl" else "merged")
    assert cost["inference_batch_size"] == len(untouched)
    low, high = cost["inference_ratio_spread"]
    assert low <= cost["inference_ratio"] <= high and cost["inference_rounds"] == 2


def test_a_failed_inference_measurement_keeps_the_results(tiny_config, monkeypatch, capsys):
    from retain import inference

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

    monkeypatch.setattr(inference, "paired_seconds", out_of_memory)
    cfg = tiny_config(method="seq-lora")
    res = run(cfg, progress=False)
    saved = json.loads((Path(cfg.out) / "results.json").read_text())
    assert saved["cost"]["inference_ratio"] is None and res["matrix"] == saved["matrix"]
    assert saved["cost"]["inference_ratio_spread"] is None
    assert saved["cost"]["inference_path"] == "not measured"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["inference cost not measured: OutOfMemoryError: CUDA out of memory. Tried "
                   "to allocate 2.00 GiB"]


def test_frozen_ncm_trains_nothing_and_keeps_the_backbone(tiny_config):
    res = run(tiny_config(method="frozen-ncm", retention=True), progress=False)
    assert res["cost"]["trainable_parameters"] == 0 and res["cost"]["steps"] == 0
    assert all(v["ratio"] == pytest.approx(1.0) for v in res["retention"].values())


@pytest.mark.parametrize("method", ["seq-lora", "seq-ft"])
def test_exactly_the_trainable_parameters_move(tiny_config, tiny_bert, method):
    from retain.backbones import load_backbone

    plan = tiny_config(method=method).plan()
    stream = plan.build_stream()
    method = plan.build_method()
    method.setup(load_backbone(tiny_bert), stream)
    task = stream.tasks[0]
    method.begin_task(task, lambda: [])
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    if method.name == "seq-lora":
        assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    else:
        assert trainable == set(dict(method.named_parameters()))
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    opt = torch.optim.AdamW([p for g in method.trainable_parameters().values() for p in g],
                            lr=1e-2)
    batch = method.backbone.tokenize([it["text"] for it in task.train.items[:8]], 16)
    batch["labels"] = torch.as_tensor(task.train.labels[:8])
    for _ in range(2):  # lora_B starts at zero, so lora_A moves from the second step on
        method(batch).backward()
        opt.step()
        opt.zero_grad()
    after = dict(method.named_parameters())
    for name, old in before.items():
        moved = not torch.equal(old, after[name])
        assert moved == (name in trainable), name
    # what a checkpoint stores, as the method declares it: everything that trains, plus the
    # head's buffers; counted by hand
    stored = set(method.stored_tensors())
    assert trainable <= stored
    assert all(n in trainable or "lora_" in n or n.startswith("head.") for n in stored)
    head = sum(p.numel() for p in method.head.parameters())
    if method.name == "seq-ft":  # the whole encoder (its embeddings included) and the head
        assert method.stored_parameters() == head + sum(
            p.numel() for p in method.model.parameters())
    else:  # rank 8 on query and value of 2 layers of width 32: A (8x32) and B (32x8) each
        assert method.stored_parameters() == head + 2 * 2 * (8 * 32 + 32 * 8)


def test_joint_trains_once_on_everything(tiny_config):
    res = run(tiny_config(method="joint"), progress=False)
    steps = [p["steps"] for p in res["per_task"]]
    assert steps[:2] == [0, 0] and steps[2] > 0


def test_resume_after_a_crash_reaches_the_same_results(tiny_config, monkeypatch, tmp_path):
    full = run(tiny_config(out=str(tmp_path / "full")), progress=False)
    restore = crash_on_task(monkeypatch, get_method_class("seq-lora"), 2)
    cfg = tiny_config(out=str(tmp_path / "crashed"))
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    state = json.loads((tmp_path / "crashed" / "checkpoint" / "state.json").read_text())
    assert state["tasks_done"] == 2
    assert not list((tmp_path / "crashed" / "checkpoint").glob("*.tmp"))
    restore()
    with pytest.raises(RetainError, match="resume=True"):
        run(cfg, progress=False)
    resumed = run(cfg, resume=True, progress=False)
    assert resumed["matrix"] == full["matrix"]
    assert [p["last_loss"] for p in resumed["per_task"]] == [p["last_loss"] for p in
                                                            full["per_task"]]
    assert resumed["task_incremental_matrix"] == full["task_incremental_matrix"]


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
        run(tiny_config(method_options={"target_modules": "c_attn"}), progress=False)


def test_unknown_option_is_refused(tiny_config):
    with pytest.raises(RetainError, match="unknown option 'rnak'"):
        run(tiny_config(method_options={"rnak": "4"}), progress=False)


def test_task_scenario_reports_task_incremental_accuracy(tiny_config, tmp_path):
    res = run(tiny_config(scenario="task", method="frozen-ncm", out=str(tmp_path / "t")),
              progress=False)
    cil = run(tiny_config(method="frozen-ncm", out=str(tmp_path / "c")), progress=False)
    assert res["class_incremental_matrix"] == cil["matrix"]
    assert res["matrix"] == cil["task_incremental_matrix"]
    assert res["metrics"]["final_accuracy"] == cil["task_incremental_metrics"]["final_accuracy"]
    # restricting the argmax to the true task's classes can only turn errors into hits
    for til_row, cil_row in zip(res["matrix"], cil["matrix"], strict=True):
        assert all(t >= c for t, c in zip(til_row, cil_row, strict=True))


def test_two_processes_match_one_on_prototypes(tiny_bert, tmp_path):
    """Boundary statistics are summed across processes with every item counted once: with 27
    training items a task (odd, so the shards are uneven) the prototypes equal one process's."""
    from safetensors.torch import load_file

    from tests.conftest import make_rows, torchrun

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows(11)))  # 9 train / 2 test a class
    # mean pooling: the random tiny BERT's CLS state barely depends on the text, so its cosines
    # to the prototypes tie within float noise (margins 0 to 6e-8) and a 1e-7 difference in the
    # summed prototypes flipped a prediction; mean-pooled margins are about 1e-3
    args = ["run", "--method", "frozen-ncm", "--data", str(data), "--classes-per-task", "3",
            "--backbone", tiny_bert, "--profile", "smoke", "--no-retention", "--quiet",
            "--pooling", "mean"]
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        proc = torchrun(args, out, n)
        assert proc.stdout.count("frozen-ncm on") == 1  # the table comes from the main process
        outs[n] = out
    one, two = (json.loads((outs[n] / "results.json").read_text()) for n in (1, 2))
    assert two["cost"]["processes"] == 2 and one["cost"]["processes"] == 1
    assert two["matrix"] == one["matrix"]
    weights = [load_file(str(next((outs[n] / "checkpoint").glob("*.safetensors"))))
               for n in (1, 2)]
    assert torch.allclose(weights[0]["head.counts"], weights[1]["head.counts"])
    assert torch.allclose(weights[0]["head.means"], weights[1]["head.means"], atol=1e-6)


def test_domain_incremental_stream_end_to_end(tiny_config, tmp_path):
    from tests.conftest import make_rows

    rows = [dict(r, domain=f"d{i % 3}") for i, r in enumerate(make_rows(12, ["food", "sport"]))]
    path = tmp_path / "dom.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    for head in ("task-heads", "growing", "prototypes"):
        res = run(tiny_config(data=str(path), scenario="domain", head=head,
                              out=str(tmp_path / head)), progress=False)
        assert [len(r) for r in res["matrix"]] == [1, 2, 3]
        assert "task_incremental_matrix" not in res  # classes are shared
        assert res["tasks"][0]["classes"] == [0, 1]


def test_bf16_mixed_precision_runs(tiny_config, monkeypatch):
    """Under bf16 the backbone computes in bf16 while training, the trained parameters stay
    fp32, and the reported matrix is the one bf16 prediction gives."""
    from retain.methods.base import ContinualMethod

    dtypes = set()
    original = ContinualMethod.loss

    def loss(self, batch):  # the dtype every linear layer of the backbone computes in
        hooks = [m.register_forward_hook(lambda mod, a, y: dtypes.add(y.dtype))
                 for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
        try:
            return original(self, batch)
        finally:
            for h in hooks:
                h.remove()

    monkeypatch.setattr(ContinualMethod, "loss", loss)
    cfg = tiny_config(mixed_precision="bf16")
    res, trained = train_stream(cfg, progress=False)
    assert res["config"]["mixed_precision"] == "bf16"
    assert dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trained.parameters() if p.requires_grad)
    cil, _ = recompute_last_rows(trained, cfg, bf16=True)
    assert res["matrix"][-1] == cil


def test_joint_refuses_heads_that_train_one_task(tiny_config):
    with pytest.raises(RetainError, match="needs head='growing'"):
        run(tiny_config(method="joint", head="task-heads"), progress=False)
