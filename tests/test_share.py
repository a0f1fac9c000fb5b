"""Share: orthonormal bases, reconstruction of old tasks inside the kept subspace and the
measured loss outside it, task-incremental coefficients, storage, peft round trips, resume."""

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from retain.engine import train_stream
from retain.methods.share import Share, ShareConfig, ShareLinear
from tests.conftest import check_exact_resume
from tests.test_plate import _tiny_bert


def _layer_model(k, p, phi=2, d_in=20, d_out=16):
    torch.manual_seed(0)
    base = torch.nn.Sequential()
    base.add_module("proj", torch.nn.Linear(d_in, d_out))
    model = get_peft_model(base, ShareConfig(k=k, p=p, phi=phi, target_modules=["proj"]))
    layer = model.base_model.model.proj
    assert isinstance(layer, ShareLinear)
    return model, layer


def _train_randomly(layer, seed):
    """Stand-in for a task's training: random values for every trainable tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for store in (layer.share_Va, layer.share_Vb, layer.share_Ea, layer.share_Eb):
            store["default"].copy_(torch.randn(store["default"].shape, generator=g))


def _orthonormal(u, tol=1e-5):
    return torch.allclose(u.T @ u, torch.eye(u.shape[1]), atol=tol)


def test_old_tasks_inside_the_kept_subspace_are_reconstructed():
    """3 tasks of rank 2 with k = 12: every stack fits, so each old task's dW is reconstructed
    after every later update (1e-4 relative), and the bases stay orthonormal."""
    model, layer = _layer_model(k=12, p=2)
    deltas = []
    for t in range(3):
        _train_randomly(layer, t)
        deltas.append(layer.get_delta_weight("default").detach().clone())
        model.base_model.consolidate()
        assert _orthonormal(layer.share_Ua["default"]) and _orthonormal(layer.share_Ub["default"])
        assert layer.tasks("default") == t + 1
        for s, want in enumerate(deltas):
            got = layer.get_delta_weight("default", task=s)
            assert (got - want).norm() <= 1e-4 * want.norm(), (t, s)
    assert layer.share_Ua["default"].shape[1] == 6  # k larger than the rank: the rank is kept
    # the next task starts from the last task's update
    assert torch.allclose(layer.get_delta_weight("default"), deltas[-1], atol=1e-5)


def test_a_stack_beyond_k_loses_exactly_the_discarded_energy():
    """k = 3 with 2 tasks of rank 2 (a rank-4 stack): the kept basis is the top 3 singular
    vectors, and the stack's reconstruction error is the discarded singular value (the
    Eckart-Young loss), measured on the stored coefficients."""
    model, layer = _layer_model(k=3, p=2, phi=2)  # V takes task 2 out of the first span
    factors = []
    for t in range(2):
        _train_randomly(layer, 10 + t)
        factors.append([f.detach().double().clone() for f in layer.factors("default")])
        model.base_model.consolidate()
    u_a = layer.share_Ua["default"].double()
    assert u_a.shape[1] == 3 and _orthonormal(u_a.float())
    # task 1's factor went through the first basis (which held it exactly), then the second
    stack = torch.cat([factors[0][0], factors[1][0]], 1)
    expected = torch.linalg.svdvals(stack)[3:].square().sum().sqrt()
    stored = torch.cat([u_a @ e for e in layer.share_Ea_tasks["default"].double()], 1)
    measured = (stack - stored).norm()
    assert measured == pytest.approx(float(expected), rel=1e-4) and measured > 0.1
    old = factors[0][0]
    rel = float((old - u_a @ layer.share_Ea_tasks["default"][0].double()).norm() / old.norm())
    assert rel > 1e-3  # the old task lost part of its update: measured, not hidden


def test_merging_and_peft_round_trip_keep_every_task(tmp_path):
    model = get_peft_model(_tiny_bert(), ShareConfig(k=8, p=2, target_modules=["query"]))
    layers = [m for m in model.modules() if isinstance(m, ShareLinear)]
    for t in range(2):
        for layer in layers:
            _train_randomly(layer, 100 + t)
        model.base_model.consolidate()
    for layer in layers:
        _train_randomly(layer, 7)  # the third task, not consolidated
    x = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        expected = model(input_ids=x).last_hidden_state
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "SHARE" and config["k"] == 8
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("share_Ea_tasks" in k for k in saved)  # every task's coefficients travel
    loaded = PeftModel.from_pretrained(_tiny_bert(), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=x).last_hidden_state, expected, atol=1e-6)
    for a, b in zip(layers, [m for m in loaded.modules() if isinstance(m, ShareLinear)],
                    strict=True):
        for s in range(2):
            assert torch.equal(a.get_delta_weight("default", s), b.get_delta_weight("default", s))
    merged = loaded.merge_and_unload()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=x).last_hidden_state, expected, atol=1e-5)


def test_share_stores_the_bases_once_and_2kp_per_task(tiny_config):
    res, method = train_stream(tiny_config(method="share"), progress=False)
    layers = method.share_layers()
    assert len(layers) == 4  # 2 layers x query, value
    ks = [(m.share_Ua["default"].shape[1], m.share_Ub["default"].shape[1])
          for m in layers.values()]
    # task 1 brings rank 8, each later task at most phi = 2 new directions: at most 12 < k = 32
    assert all(0 < k <= 12 for pair in ks for k in pair)
    assert ks[0][0] == 12  # the input side: the random LoRA A and the trained directions
    head = sum(t.numel() for n, t in method.stored_tensors().items() if n.startswith("head."))
    # per layer: U_a (32 x k_a), U_b (32 x k_b), and per task E_a (k_a x 8), E_b (k_b x 8)
    adapter = sum(32 * ka + 32 * kb + 3 * 8 * (ka + kb) for ka, kb in ks)
    assert res["cost"]["stored_parameters"] == head + adapter
    lora_per_task = 4 * 8 * (32 + 32)
    assert res["cost"]["stored_ratio_vs_lora_per_task"] == pytest.approx(3 * lora_per_task
                                                                         / adapter)


def test_share_resumes_exactly(tiny_config, monkeypatch, tmp_path):
    check_exact_resume(tiny_config, monkeypatch, tmp_path, Share, method="share", lr=1e-2)


def test_the_stored_ratio_of_other_adapter_methods(tiny_config, tmp_path):
    res = train_stream(tiny_config(method="seq-lora", out=str(tmp_path / "l")),
                       progress=False)[0]
    assert res["cost"]["stored_ratio_vs_lora_per_task"] == pytest.approx(3.0)  # one LoRA, 3 tasks
    ncm = train_stream(tiny_config(method="frozen-ncm", out=str(tmp_path / "n")),
                       progress=False)[0]
    assert ncm["cost"]["stored_ratio_vs_lora_per_task"] is None


@pytest.mark.parametrize("method", ["share", "lora-per-task"])
def test_a_task_id_selects_that_tasks_own_update(tiny_config, tmp_path, method):
    """With a task id the backbone computes with that task's coefficients (adapter); without
    one, with the latest, which is also the last task's."""
    from retain.data import build_stream

    cfg = tiny_config(method=method, head="prototypes", lr=5e-2, out=str(tmp_path / method))
    _, m = train_stream(cfg, progress=False)
    task = build_stream(cfg.resolved(), m.backbone).tasks[0]
    batch = m.backbone.batch(task.test.items, 16)
    with torch.no_grad():
        first, latest = m.predict(batch, task_id=0), m.predict(batch)
        last = m.predict(batch, task_id=2)
    assert not torch.allclose(first, latest, atol=1e-4)
    assert torch.allclose(last, latest, atol=1e-4)
