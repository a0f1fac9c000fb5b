"""InfLoRA: the DualGPM memory on known spectra, the interference-free invariant, merging,
fused qkv layers, and statistics across processes."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from retain.engine import train_stream
from retain.errors import RetainError
from retain.methods.inflora import InfLoRA, InfLoRAConfig, SubspaceMemory
from retain.methods.inflora.method import add_branch, qkv_row_mask
from tests.conftest import check_exact_resume, torchrun

SPECTRUM = [10.0, 5.0, 3.0, 1.0, 0.6, 0.4]  # trace 20; distinct, so directions are unique


def _rotated(spectrum, seed=0):
    Q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    return Q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ Q.T, Q


def _same_span(A, B):
    return torch.allclose(A @ A.T, B @ B.T, atol=1e-9)


def test_paper_energy_keeps_the_directions_holding_the_threshold():
    # eigenvalue shares 0.5, 0.25, 0.15, ...: 0.75 < 0.85 <= 0.90, so three directions
    C, Q = _rotated(SPECTRUM)
    mem = SubspaceMemory(6)
    assert mem.update(C, 0.85, "paper") == 3
    assert _same_span(mem.protected_basis(), Q[:, :3]) and not mem.complement


def test_official_energy_squares_the_spectrum_and_keeps_fewer():
    # squared shares 100, 25, 9, ... of 135.52: 0.738 < 0.85 <= 0.923, so two directions
    C, Q = _rotated(SPECTRUM)
    mem = SubspaceMemory(6)
    assert mem.update(C, 0.85, "official") == 2
    assert _same_span(mem.protected_basis(), Q[:, :2])


def test_later_tasks_count_energy_already_protected():
    C, Q = _rotated(SPECTRUM)
    mem = SubspaceMemory(6)
    mem.update(C, 0.85, "paper")
    assert mem.update(C, 0.85, "paper") == 0  # already 0.90 of this covariance is protected
    assert mem.update(C, 0.93, "paper") == 1  # 0.90 + 0.05 reaches 0.93
    assert _same_span(mem.protected_basis(), Q[:, :4])


def test_official_first_task_rule_keeps_one_fewer():
    # paper shares 0.5, 0.25, 0.15: 'below' 0.85 keeps 2 (0.5, 0.75), 'reach' keeps 3
    C, Q = _rotated(SPECTRUM)
    mem = SubspaceMemory(6)
    assert mem.update(C, 0.85, "paper", first_task="below") == 2
    assert _same_span(mem.protected_basis(), Q[:, :2])
    # squared shares 0.738, 0.923: the official code keeps 1 where 'reach' keeps 2
    official = SubspaceMemory(6)
    assert official.update(C, 0.85, "official", first_task="below") == 1
    assert official.update(C, 0.85, "official", first_task="below") == 1  # later: 'reach'
    below_all = SubspaceMemory(6)  # at least one direction even when the first exceeds eps
    assert below_all.update(C, 0.3, "paper", first_task="below") == 1


@pytest.mark.parametrize("energy", ["paper", "official"])
def test_threshold_one_protects_exactly_the_occupied_directions(energy):
    """lambda_b = 1: rounding must not let zero-energy directions in. Rank-2 data in 8
    dimensions protects exactly 2 directions in every trial, and the next task still learns."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        X = torch.randn(50, 2, generator=g, dtype=torch.float64) @ \
            torch.randn(2, 8, generator=g, dtype=torch.float64)
        mem = SubspaceMemory(8)
        assert mem.update(X.T @ X / 50, 1.0, energy) == 2
        Y = torch.randn(50, 8, generator=g, dtype=torch.float64)
        assert mem.design(Y.T @ Y / 50, 4).norm(dim=1).min() > 0.99  # unit rows, not zeros


def test_memory_switches_to_the_complement_past_half_the_dimension():
    C, Q = _rotated(SPECTRUM)
    mem = SubspaceMemory(6)
    assert mem.update(C, 0.97, "paper") == 5  # 0.95 < 0.97 <= 0.98
    assert mem.complement and mem.basis.shape[1] == 1  # stores the smaller basis
    assert _same_span(mem.basis, Q[:, 5:])
    assert mem.protected_dims == 5 and _same_span(mem.protected_basis(), Q[:, :5])
    # a design now lives in the one free direction
    B = mem.design(C, 2)
    assert torch.allclose(B @ Q[:, :5], torch.zeros(2, 5, dtype=torch.float64), atol=1e-12)
    # updating the complement removes directions from it
    C2, _ = _rotated([1.0] * 6, seed=1)
    assert mem.update(C2, 0.99, "paper") == 1
    assert mem.protected_dims == 6 and mem.basis.shape[1] == 0


def test_design_is_orthogonal_to_the_protected_subspace_at_any_rank():
    C, Q = _rotated(SPECTRUM)
    mem = SubspaceMemory(6)
    mem.update(C, 0.85, "paper")
    for rank in (1, 3, 6):  # 6 > the 3 free dimensions: the rest must not leak into M
        B = mem.design(C, rank)
        assert B.shape == (rank, 6)
        assert (B @ mem.protected_basis()).abs().max() < 1e-12
    assert _same_span(mem.design(C, 3).T, Q[:, 3:])  # the free directions, largest first


def test_config_is_validated():
    with pytest.raises(RetainError, match="energy"):
        InfLoRAConfig(energy="both")
    with pytest.raises(RetainError, match="qkv_parts"):
        InfLoRAConfig(qkv_parts=["x"])
    with pytest.raises(RetainError, match="first_task"):
        InfLoRAConfig(first_task="all")


def test_dropout_false_trains_the_backbone_in_eval_mode(tiny_config, monkeypatch, tmp_path):
    from retain.methods.base import ContinualMethod

    modes = []
    original = ContinualMethod.loss

    def loss(self, batch):
        modes.append((self.model.training, self.head.training))
        return original(self, batch)

    monkeypatch.setattr(ContinualMethod, "loss", loss)
    for dropout in (True, False):
        modes.clear()
        train_stream(tiny_config(method="inflora", epochs=1, out=str(tmp_path / str(dropout)),
                                 method_options={"dropout": dropout}), progress=False)
        assert modes and set(modes) == {(dropout, True)}


def test_fused_qkv_adapts_only_the_chosen_rows():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Module()
            self.attn.qkv = nn.Linear(4, 12)

        def forward(self, x):
            return self.attn.qkv(x)

    assert qkv_row_mask("attn.qkv", nn.Linear(4, 12), ["k", "v"]).flatten().tolist() == \
        [0.0] * 4 + [1.0] * 8
    assert qkv_row_mask("attn.proj", nn.Linear(4, 4), ["k"]) is None
    model = Block()
    add_branch(model, None, "task0", {"attn.qkv": torch.eye(4)[:2]}, [], ["k", "v"])
    up = model.attn.qkv.lora_B["task0"].weight
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    assert torch.all(up[:4] == 0) and up[4:].abs().sum() > 0


def _check_invariant(monkeypatch, ratios, merged=None):
    """Wrap end_task: before the memory absorbs task t, measure ||A_t B_t x|| / ||x|| for x in
    the basis stored before task t (the branch is still unmerged here); with ``merged`` (a list),
    also ``||dW M|| / ||dW||`` of what the merge added to W."""
    original = InfLoRA.end_task

    def end_task(self, task, batches):
        branch = f"task{task.index}"
        base = self.model
        before = {}
        for name in self.layers:
            layer = base.get_submodule(name)
            M = self.memory(name).protected_basis().clone()
            before[name] = (layer.base_layer.weight.detach().clone(), M)
            with torch.autocast("cpu", enabled=False):  # end_task runs under the autocast
                delta = (layer.lora_B[branch].weight @ layer.lora_A[branch].weight).detach()
                assert delta.abs().max() > 0  # the branch did train
                if M.shape[1]:
                    x = M.to(delta)
                    ratios.append(float(((delta @ x).norm(dim=0) / x.norm(dim=0)).max()))
        original(self, task, batches)
        if merged is not None:
            for name, (weight, M) in before.items():
                if M.shape[1]:
                    dW = (self.model.get_submodule(name).weight.detach() - weight).double()
                    merged.append(float((dW @ M).norm() / dW.norm()))

    monkeypatch.setattr(InfLoRA, "end_task", end_task)


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_branches_do_not_touch_old_task_inputs(tiny_config, monkeypatch, merge, precision):
    ratios, merged = [], []
    _check_invariant(monkeypatch, ratios, merged if merge else None)
    train_stream(tiny_config(method="inflora", lr=1e-2, epochs=2, mixed_precision=precision,
                             method_options={"merge": merge}), progress=False)
    assert len(ratios) == 2 * 2 * 2  # tasks 2 and 3, key and value, 2 layers
    assert max(ratios) < 1e-4
    if merge:  # the merged update too, formed in fp32 under bf16 autocast
        assert len(merged) == 2 * 2 * 2 and max(merged) < 1e-4


def test_key_and_value_share_one_memory(tiny_config):
    method = train_stream(tiny_config(method="inflora", epochs=1), progress=False)[1]
    assert len(method.memories) == 2  # one per attention block, not per layer
    for group, members in method.groups.items():
        assert members[0] == group
        assert [m.rsplit(".", 1)[1] for m in members] == ["key", "value"]
        assert method.memory(members[0]) is method.memory(members[1])
    stored = [n for n in method.stored_tensors() if n.startswith("memories")]
    assert len(stored) == 2


def test_the_memory_holds_each_old_tasks_input_energy(tiny_config, monkeypatch):
    """The spec's check: after every later task, the stored basis still captures at least eps_t
    of task t's input energy, tr(P C_t) / tr(C_t), with C_t recomputed here from the task's own
    data (a memory built from any other statistics fails)."""
    original = InfLoRA.end_task
    seen = []

    def end_task(self, task, batches):
        original(self, task, batches)
        eps = self.config.lambda_b + (1 - self.config.lambda_b) * task.index / self.num_tasks
        seen.append((eps, self.input_covariances(batches)))
        for eps_t, covs in seen:
            for group, C in covs.items():
                P = self.memories[group.replace(".", "/")].protected_basis()
                captured = float(torch.trace(P.T @ C @ P) / torch.trace(C))
                assert captured >= eps_t - 1e-9, (task.index, group, captured, eps_t)

    monkeypatch.setattr(InfLoRA, "end_task", end_task)
    train_stream(tiny_config(method="inflora", lr=1e-2, epochs=2), progress=False)
    assert len(seen) == 3


@pytest.mark.parametrize("head", ["analytic", "growing"])
def test_one_pass_after_a_task(tiny_config, monkeypatch, head):
    """A task's end makes one forward per training batch: with a head that reads the data
    (analytic), its pass also feeds the input statistics, which equal those of a pass of
    their own on the model as trained; a linear head reads nothing, so the statistics take
    the one pass."""
    original_end, original_features = InfLoRA.end_task, InfLoRA.features
    original_cov = InfLoRA._covariances
    log = {"phase": None, "forwards": 0, "batches": 0, "checked": 0}

    def features(self, batch):
        if log["phase"] == "end":
            log["forwards"] += 1
        return original_features(self, batch)

    def end_task(self, task, batches):
        log["expected"] = self.input_covariances(batches)  # before the merge, not counted
        log["batches"] += sum(1 for _ in batches())
        log["phase"] = "end"
        try:
            original_end(self, task, batches)
        finally:
            log["phase"] = None

    def covariances(self, stats):
        out = original_cov(self, stats)
        if log["phase"] == "end" and head == "analytic":  # the linear head's: after the merge
            for name, cov in out.items():
                assert torch.allclose(cov, log["expected"][name], rtol=1e-9, atol=1e-12)
                log["checked"] += 1
        return out

    monkeypatch.setattr(InfLoRA, "features", features)
    monkeypatch.setattr(InfLoRA, "end_task", end_task)
    monkeypatch.setattr(InfLoRA, "_covariances", covariances)
    train_stream(tiny_config(method="inflora", head=head), progress=False)
    assert log["forwards"] == log["batches"] > 0
    assert log["checked"] > 0 or head != "analytic"


def _layer_inputs(method, batches, suffixes=("self.key", "self.value")):
    """The key and value layers (adapter wrappers included) and their inputs on ``batches``,
    non-padding tokens only, in eval mode."""
    layers = {n: m for n, m in method.model.named_modules() if n.endswith(suffixes)}
    inputs, mask = {}, {}
    hooks = [m.register_forward_pre_hook(
        lambda mod, a, n=n: inputs.setdefault(n, []).append(a[0][mask["m"]]))
        for n, m in layers.items()]
    method.eval()
    with torch.no_grad():
        for batch in batches:
            mask["m"] = batch["attention_mask"].bool()
            method.features(batch)
    for h in hooks:
        h.remove()
    return layers, {n: torch.cat(xs) for n, xs in inputs.items()}


def test_old_task_outputs_move_far_less_than_under_seq_lora(tiny_config, monkeypatch, tmp_path):
    """The spec's second check: each key and value layer, fed task 1's inputs as they were after
    task 1, gives outputs after the last task that moved far less under InfLoRA than under LoRA
    on the same layers with the same steps and learning rate."""
    from retain.loop import Engine

    original = Engine.run_task
    state, moved = {}, {}

    def run_task(self, task, record):
        original(self, task, record)
        layers, inputs = _layer_inputs(self.method, self.loader([self.stream.tasks[0].train]))
        with torch.no_grad():
            if task.index == 0:
                state.update(inputs=inputs, outputs={n: layers[n](x) for n, x in inputs.items()})
            elif task.index == len(self.stream) - 1:
                assert len(layers) == 4
                moved[self.method.name] = max(
                    float((layers[n](x) - state["outputs"][n]).norm() / state["outputs"][n].norm())
                    for n, x in state["inputs"].items())

    monkeypatch.setattr(Engine, "run_task", run_task)
    for method, options in (("inflora", {}), ("seq-lora", {"target_modules": "key,value"})):
        train_stream(tiny_config(method=method, lr=1e-2, epochs=2, out=str(tmp_path / method),
                                 method_options=options), progress=False)
    # measured: inflora 0.23, seq-lora 4.9; a memory built from a random covariance: 0.61
    assert moved["seq-lora"] > 0.5
    assert moved["inflora"] < 0.075 * moved["seq-lora"], moved


def test_merged_and_kept_branches_predict_the_same(tiny_config, tmp_path):
    runs = {}
    for merge in (True, False):
        runs[merge] = train_stream(tiny_config(method="inflora", lr=1e-2, out=str(tmp_path / str(
            merge)), method_options={"merge": merge}), progress=False)
    (a, ma), (b, mb) = runs[True], runs[False]
    assert a["matrix"] == b["matrix"]
    assert np.allclose([p["last_loss"] for p in a["per_task"]],
                       [p["last_loss"] for p in b["per_task"]], atol=1e-5)
    assert len(mb.branches) == 3 and not ma.branches
    batch = ma.backbone.tokenize(["the dog and the rain", "the piano and the bread"], 16)
    ma.eval(), mb.eval()
    with torch.no_grad():  # the same function in two float forms; the ridge head (lambda down
        # to 0.01 on 64 projected features) magnifies their rounding in its scores
        assert torch.allclose(ma.features(batch), mb.features(batch), atol=1e-5)
        assert torch.allclose(ma.predict(batch), mb.predict(batch), atol=1e-3)


@pytest.mark.parametrize("options", [{}, {"merge": False}])
def test_inflora_resumes_exactly(tiny_config, monkeypatch, tmp_path, options):
    check_exact_resume(tiny_config, monkeypatch, tmp_path, InfLoRA, method="inflora", lr=1e-2,
                       method_options=options)


def test_two_processes_design_the_same_branches(tiny_bert, jsonl_file, tmp_path):
    """Covariances are summed across processes before the decomposition. Without training
    (learning rates 0) every design and memory must match one process's."""
    from safetensors.torch import load_file

    args = ["run", "--method", "inflora", "--head", "task-heads", "--set", "merge=false",
            "--data", jsonl_file, "--classes-per-task", "3", "--backbone", tiny_bert,
            "--profile", "smoke", "--lr", "0", "--head-lr", "0", "--no-retention", "--quiet"]
    weights = []
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        torchrun(args, out, n)
        assert json.loads((out / "results.json").read_text())["cost"]["processes"] == n
        weights.append(load_file(str(next((out / "checkpoint").glob("*.safetensors")))))
    downs = [k for k in weights[0] if "lora_A" in k or k.startswith("memories")]
    assert len(downs) == 2 * 2 * 2 + 2  # 2 tasks x 2 layers x key/value, 2 shared memories
    for k in downs:
        a, b = weights[0][k].double(), weights[1][k].double()
        if k.startswith("memories"):  # compare spans: bases are unique up to sign
            a, b = a @ a.T, b @ b.T
        else:
            a, b = a.T @ a, b.T @ b
        assert torch.allclose(a, b, atol=1e-5), k


def test_each_task_protects_exactly_the_directions_its_own_threshold_needs(tiny_config,
                                                                          monkeypatch):
    """Task t (0-based, of T) adds to the memory the fewest directions of its residual
    spectrum that bring the captured energy to lambda_b + (1 - lambda_b) t / T: counted here
    from each call's own covariance and the memory before it, so a schedule one task ahead (or
    behind) adds other counts and fails."""
    original = SubspaceMemory.update
    calls = []

    def update(self, cov, threshold, energy="paper", first_task="reach"):
        C = cov.double()
        residual = self.project_out(self.project_out(C).T)
        values = torch.linalg.eigvalsh(residual).flip(0).clamp_min(0)
        total = float(torch.trace(C))
        captured, expected = (total - float(values.sum())) / total, 0
        for v in values.tolist():
            if captured >= calls_threshold[-1]:
                break
            captured += v / total
            expected += 1
        added = original(self, cov, threshold, energy, first_task)
        calls.append((threshold, added, expected))
        return added

    lambda_b = 0.9
    calls_threshold = []

    def end_task(self, task, batches):
        calls_threshold.append(lambda_b + (1 - lambda_b) * task.index / 3)
        return original_end(self, task, batches)

    original_end = InfLoRA.end_task
    monkeypatch.setattr(SubspaceMemory, "update", update)
    monkeypatch.setattr(InfLoRA, "end_task", end_task)
    train_stream(tiny_config(method="inflora", lr=1e-2, epochs=2,
                             method_options={"lambda_b": lambda_b}), progress=False)
    thresholds = sorted({round(t, 12) for t, _, _ in calls})
    assert thresholds == pytest.approx([0.9, 0.9 + 0.1 / 3, 0.9 + 0.2 / 3])
    assert all(added == expected for _, added, expected in calls), calls
    assert sum(added for _, added, _ in calls) > 0
