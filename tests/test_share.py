"""Share: orthonormal bases, reconstruction of old tasks inside the kept subspace and the
measured loss outside it, task-incremental coefficients, storage, peft round trips, resume."""

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from retain.engine import train_stream
from retain.errors import RetainError
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


def test_new_temporary_directions_are_orthonormal_and_orthogonal_to_the_basis():
    """After every update the temporary directions are orthonormal, orthogonal to the new basis
    (1e-6), and start with zero coefficients, so the next task starts from the last update."""
    model, layer = _layer_model(k=12, p=2, phi=3)
    for t in range(3):
        _train_randomly(layer, 20 + t)
        last = layer.get_delta_weight("default").detach().clone()
        model.base_model.consolidate()
        for u, v, e in ((layer.share_Ua, layer.share_Va, layer.share_Ea),
                        (layer.share_Ub, layer.share_Vb, layer.share_Eb)):
            u, v, e = u["default"], v["default"], e["default"]
            assert v.shape[1] == 3 and _orthonormal(v, tol=1e-6)
            assert (u.T @ v).abs().max() <= 1e-6, (t, (u.T @ v).abs().max())
            assert torch.equal(e[u.shape[1]:], torch.zeros(3, 2))
        assert torch.allclose(layer.get_delta_weight("default"), last, atol=1e-5)


def _widths_and_deltas(dtype, tasks=3, d_in=1200, d_out=128):
    """The basis widths after each update and each task's stored update, for random factors
    drawn in float32 and held in ``dtype``; d_in x dtype epsilon and d_out x bfloat16's
    epsilon exceed 1 (where a cut-off scaled by the adapter dtype's epsilon kept nothing)."""
    model, layer = _layer_model(k=32, p=8, phi=2, d_in=d_in, d_out=d_out)
    model.to(dtype)
    widths, deltas = [], []
    for t in range(tasks):
        g = torch.Generator().manual_seed(30 + t)
        with torch.no_grad():
            for store in (layer.share_Va, layer.share_Vb, layer.share_Ea, layer.share_Eb):
                shape = store["default"].shape
                store["default"].copy_(torch.randn(shape, generator=g).to(dtype))
        deltas.append(layer.get_delta_weight("default").detach().float())
        model.base_model.consolidate()
        assert layer.tasks("default") == t + 1  # every task is stored
        widths.append((layer.share_Ua["default"].shape[1], layer.share_Ub["default"].shape[1]))
    stored = [layer.get_delta_weight("default", task=s).float() for s in range(tasks)]
    return widths, deltas, stored


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_adapters_keep_as_many_directions_as_float32(dtype):
    """The rank cut-off does not depend on the adapter's dtype: bf16 and fp16 bases hold as
    many directions as float32 ones (8, then 2 more per task), and every task's update is
    stored, to 4 of the dtype's epsilons (relative)."""
    widths32, _, _ = _widths_and_deltas(torch.float32)
    assert widths32 == [(8, 8), (10, 10), (12, 12)]
    widths, deltas, stored = _widths_and_deltas(dtype)
    assert widths == widths32
    eps = torch.finfo(dtype).eps
    for want, got in zip(deltas, stored, strict=True):
        assert (got - want).norm() <= 4 * eps * want.norm()  # measured: at most 0.98 eps


def test_a_task_that_learnt_nothing_is_stored_as_a_zero_update():
    """A first task that leaves the update zero (the LoRA's B untouched) is stored as task 0
    with a zero update, so the next task is stored as task 1 and task ids stay aligned."""
    model, layer = _layer_model(k=12, p=2)
    model.base_model.consolidate()  # V_b = 0: nothing learnt
    assert layer.tasks("default") == 1 and layer.share_Ua["default"].shape[1] == 0
    assert torch.equal(layer.get_delta_weight("default", task=0), torch.zeros(16, 20))
    _train_randomly(layer, 40)
    want = layer.get_delta_weight("default").detach().clone()
    model.base_model.consolidate()
    assert layer.tasks("default") == 2
    assert not layer.get_delta_weight("default", task=0).any()
    assert (layer.get_delta_weight("default", task=1) - want).norm() <= 1e-5 * want.norm()


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

    cfg = tiny_config(method=method, head="prototypes", lr=5e-2, out=str(tmp_path / method))
    _, m = train_stream(cfg, progress=False)
    task = cfg.plan().build_stream(m.backbone).tasks[0]
    batch = m.backbone.batch(task.test.items, 16)
    with torch.no_grad():
        first, latest = m.predict(batch, task_id=0), m.predict(batch)
        last = m.predict(batch, task_id=2)
    assert not torch.allclose(first, latest, atol=1e-4)
    assert torch.allclose(last, latest, atol=1e-4)


def test_current_coefficients_option_scores_every_task_with_the_latest(tiny_config, tmp_path):
    """``task_coefficients=current`` (the authors' evaluation): a task id no longer selects
    stored coefficients; training and the class-incremental scores are those of the default."""

    runs = {}
    for choice in ("own", "current"):
        cfg = tiny_config(method="share", head="prototypes", lr=5e-2, out=str(tmp_path / choice),
                          method_options={"task_coefficients": choice})
        runs[choice] = (cfg, *train_stream(cfg, progress=False))
    (cfg, own, _), (_, current, m) = runs["own"], runs["current"]
    assert current["matrix"] == own["matrix"]
    assert current["task_incremental_matrix"][-1][-1] == own["task_incremental_matrix"][-1][-1]
    task = cfg.plan().build_stream(m.backbone).tasks[0]
    batch = m.backbone.batch(task.test.items, 16)
    with torch.no_grad():
        assert torch.equal(m.predict(batch, task_id=0), m.predict(batch))
    with pytest.raises(RetainError, match="task_coefficients must be one of own, current"):
        train_stream(tiny_config(method="share", method_options={"task_coefficients": "mine"}),
                     progress=False)


@pytest.mark.parametrize("alpha, p", [(8.0, 8), (8.0, 2), (1.0, 4)])
def test_the_update_is_alpha_over_p_times_the_factors(alpha, p):
    """dW = (alpha / p) F_b F_a^T with F = [U | V] E, built by hand from the stored tensors,
    before and after a consolidation (share.md: alpha = p gives the authors' scale of 1)."""
    torch.manual_seed(0)
    base = torch.nn.Sequential()
    base.add_module("proj", torch.nn.Linear(20, 16))
    model = get_peft_model(base, ShareConfig(k=4, p=p, phi=2, alpha=alpha,
                                             target_modules=["proj"]))
    layer = model.base_model.model.proj
    for consolidations in (0, 1):
        _train_randomly(layer, 5 + consolidations)
        ua, ub = layer.share_Ua["default"], layer.share_Ub["default"]
        va, vb = layer.share_Va["default"].detach(), layer.share_Vb["default"].detach()
        if ua.shape[1]:
            f_a = torch.cat([ua, va], 1) @ layer.share_Ea["default"].detach()
            f_b = torch.cat([ub, vb], 1) @ layer.share_Eb["default"].detach()
        else:
            f_a, f_b = va, vb
        by_hand = (alpha / p) * f_b @ f_a.T
        assert torch.allclose(layer.get_delta_weight("default"), by_hand, atol=1e-5)
        x = torch.randn(3, 20)
        with torch.no_grad():
            assert torch.allclose(layer(x), layer.get_base_layer()(x) + x @ by_hand.T,
                                  atol=1e-5)
        model.base_model.consolidate()
