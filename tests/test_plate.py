"""PLATE: neuron selection and the protected subspace on known matrices, the invariants on every
targeted layer, the efficient forward against the dense update, peft save/load/merge, rows
outside the selection untouched, resume, and the sweep."""

import dataclasses
import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

from retain.engine import train_stream
from retain.errors import RetainError
from retain.methods.plate import Plate, PlateConfig, PlateLinear, PlateOptions
from retain.methods.plate.selection import (
    hadamard_transform,
    official_neurons,
    official_subspace,
    protected_subspace,
    redundancy,
    select_neurons,
)
from tests.conftest import check_exact_resume


def _orthogonal(n, seed=0):
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    return q


def test_the_most_redundant_rows_are_the_near_duplicates():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, 40, generator=g, dtype=torch.float64)
    w[3] = 2.0 * w[7] + 0.01 * torch.randn(40, generator=g, dtype=torch.float64)
    w[9] = -w[7]  # |cos| counts anti-parallel rows as redundant too
    assert set(select_neurons(w, 3).tolist()) == {3, 7, 9}
    # exact scores by hand: mean |cos| to the other rows
    n = w / w.norm(dim=1, keepdim=True)
    cos = (n @ n.T).abs()
    expected = (cos.sum(1) - 1.0) / 11
    assert torch.allclose(redundancy(w, block=5), expected, atol=1e-12)


def test_anchored_ranking_of_large_layers_agrees_with_the_exact_one():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(600, 64, generator=g, dtype=torch.float64)
    w[:40] = w[:1] + 0.05 * torch.randn(40, 64, generator=g, dtype=torch.float64)  # a cluster
    exact = set(select_neurons(w, 40).tolist())
    anchored = set(select_neurons(w, 40, exact_limit=0, anchors=200).tolist())
    assert exact == set(range(40)) and len(exact & anchored) >= 38
    # anchors exclude themselves: with all rows but one as anchors the scores are nearly exact
    assert torch.allclose(redundancy(w, exact_limit=0, anchors=599), redundancy(w), atol=2e-3)


def test_r_is_capped_at_ninety_percent_of_the_rows_and_says_so_once():
    with pytest.warns(UserWarning, match="r=50 exceeds 90% of a layer's 10 outputs: 9 rows"):
        assert select_neurons(torch.randn(10, 4), 50).numel() == 9
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert official_neurons(torch.randn(10, 4), 50).numel() == 9  # said once already
        assert select_neurons(torch.randn(10, 4), 5).numel() == 5  # not capped: no word


def test_official_sketch_sees_only_clusters_among_its_strided_anchors():
    """600 rows, 256 anchors at stride 2 from row 0 (rows 0..510): a cluster of near-duplicates
    inside that range is found, one beyond it is not (it has no anchor to be close to), where
    the exact ranking finds both."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(600, 256, generator=g)
    w[100:130] = w[100] + 0.05 * torch.randn(30, 256, generator=g)
    w[550:580] = w[550] + 0.05 * torch.randn(30, 256, generator=g)
    inside, beyond = set(range(100, 130)), set(range(550, 580))
    official = set(official_neurons(w, 30).tolist())
    assert len(official & inside) >= 27 and not official & beyond
    assert set(select_neurons(w, 60).tolist()) == inside | beyond


def test_official_transform_is_orthogonal_only_at_powers_of_two():
    for d in (64, 128):
        F = hadamard_transform(d)
        assert torch.allclose(F.T @ F, torch.eye(d), atol=1e-5)
    s = torch.linalg.svdvals(hadamard_transform(96))
    assert s.max() <= 1 + 1e-5 and s.min() < 0.9  # a truncated block: not orthogonal


def test_official_q_reproduces_the_authors_defect_where_k_reaches_the_frozen_rows():
    """With fewer frozen rows than k, the reduced SVD returns the frozen rows' own row space:
    on a power-of-two width (a grouped-query k_proj) Q holds all of W_f's energy; the exact
    path holds none (the null space). Where k stays below the frozen rows both protect."""
    g = torch.Generator().manual_seed(0)
    few = torch.randn(6, 128, generator=g)
    official, exact = official_subspace(few, 0.9, 512), protected_subspace(few, 0.9, 512)
    assert official.basis.shape[1] == 6 and official.leak > 0.999
    assert exact.leak < 1e-9 and exact.basis.shape[1] >= 122
    # a width that is not a power of two bends the row space partly out of itself
    assert 0.3 < official_subspace(torch.randn(6, 96, generator=g), 0.9, 512).leak < 0.999
    # enough frozen rows: the official Q is orthonormal and avoids most of the energy
    decaying = torch.randn(200, 128, generator=g) * torch.logspace(0, -2, 128)
    sub = official_subspace(decaying, 0.9, 512)
    q = sub.basis
    assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=q.dtype), atol=1e-5)
    assert q.shape[1] < 128 and sub.leak < 0.1


def test_q_spans_the_lowest_energy_right_singular_directions():
    # singular values squared 50, 25, 15, 6, 3, 1 (sum 100): 0.9 is reached by 3 directions
    v = _orthogonal(6)
    w = torch.diag(torch.tensor([50.0, 25, 15, 6, 3, 1], dtype=torch.float64).sqrt()) @ v.T
    sub = protected_subspace(w, tau=0.9, max_rank=512)
    assert sub.n_high == 3 and sub.basis.shape == (6, 3)
    assert torch.allclose(sub.basis @ sub.basis.T, v[:, 3:] @ v[:, 3:].T, atol=1e-10)
    assert sub.leak == pytest.approx(0.10)
    capped = protected_subspace(w, tau=0.9, max_rank=2).basis  # max_rank keeps the two lowest
    assert torch.allclose(capped @ capped.T, v[:, 4:] @ v[:, 4:].T, atol=1e-10)


def test_fewer_frozen_rows_than_inputs_include_the_null_space():
    # 3 rows in 8 inputs (a grouped-query k_proj shape): the 5 null directions carry no energy
    v = _orthogonal(8, seed=3)
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ v[:, :3].T
    sub = protected_subspace(w, tau=0.8, max_rank=512)
    q = sub.basis
    assert q.shape[1] >= 5
    null = v[:, 3:]
    assert torch.allclose(q @ (q.T @ null), null, atol=1e-10)  # the null space lies inside Q
    assert (w @ q).pow(2).sum() / w.pow(2).sum() <= 1 - 0.8 + 1e-6


def test_a_null_space_that_holds_k_gives_the_same_q_on_every_machine():
    """Fewer frozen rows than inputs, and the null space alone holds k: Q is drawn from it the
    same way whatever the thread count (an eigensolver's pick inside a degenerate eigenspace
    changed completely with it on MiniLM's output.dense), with the full decomposition's n_high
    and k and no frozen-row energy."""
    w = torch.randn(100, 400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = protected_subspace(w, tau=0.9, max_rank=64, full=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = protected_subspace(w, tau=0.9, max_rank=64)
        torch.set_num_threads(2)
        two = protected_subspace(w, tau=0.9, max_rank=64)
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(one.basis, two.basis, atol=1e-12)
    assert (one.n_high, one.basis.shape) == (reference.n_high, reference.basis.shape)
    q = one.basis
    assert torch.allclose(q.T @ q, torch.eye(64, dtype=torch.float64), atol=1e-10)
    assert one.leak < 1e-20 and (w @ q).abs().max() < 1e-10
    v = _orthogonal(64, seed=4)
    w = torch.diag(torch.linspace(3.0, 0.5, 10, dtype=torch.float64)) @ v[:, :10].T
    # a null space too small for k: the full decomposition, null space included
    tall = protected_subspace(w, tau=0.9, max_rank=60)
    assert torch.equal(tall.basis, protected_subspace(w, tau=0.9, max_rank=60, full=True).basis)


def test_bad_knobs_give_clear_errors():
    with pytest.raises(RetainError, match="tau"):
        PlateOptions(tau=1.0)
    with pytest.raises(RetainError, match="recompute"):
        PlateOptions(recompute="never")
    with pytest.raises(RetainError, match="selection"):
        PlateOptions(selection="random")
    with pytest.raises(RetainError, match="r must be"):
        PlateConfig(r=0, target_modules=["query"])


def _tiny_llama(vocab_size=100):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, intermediate_size=64)
    return LlamaModel(cfg).eval()  # k_proj and v_proj: 32 -> 8


def _tiny_bert():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)
    return BertModel(cfg, add_pooling_layer=False).eval()


def check_invariants(model: nn.Module, tau: float) -> int:
    """Every PLATE layer: ||W_f Q||^2 / ||W_f||^2 <= 1 - tau, Q orthonormal; returns the count."""
    layers = [m for m in model.modules() if isinstance(m, PlateLinear)]
    for layer in layers:
        w = layer.get_base_layer().weight.double()
        frozen = torch.ones(w.shape[0], dtype=torch.bool)
        frozen[layer.plate_index["default"]] = False
        q = layer.plate_Q["default"].double()
        leak = (w[frozen] @ q).pow(2).sum() / w[frozen].pow(2).sum()
        assert leak <= 1 - tau + 1e-6
        assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-5)
    return len(layers)


@pytest.mark.parametrize("tau", [0.5, 0.9, 0.98])
def test_invariants_on_a_grouped_query_llama(tau):
    model = get_peft_model(_tiny_llama(), PlateConfig(r=4, tau=tau, target_modules="all-linear"))
    assert check_invariants(model, tau) == 2 * 7
    k_proj = model.base_model.model.layers[0].self_attn.k_proj
    assert k_proj.get_base_layer().weight.shape == (8, 32)
    assert k_proj.plate_Q["default"].shape[1] >= 32 - 4  # 4 frozen rows: a 28-dim null space


def _set_random_a(model, std=0.1):
    torch.manual_seed(1)
    for layer in model.modules():
        if isinstance(layer, PlateLinear):
            nn.init.normal_(layer.plate_A["default"], std=std)


def test_forward_equals_the_dense_update_and_merging_keeps_other_rows_bit_identical():
    base = _tiny_bert()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, PlateConfig(r=4, tau=0.9, alpha=0.5,
                                             target_modules=["query", "dense"]))
    _set_random_a(model)
    x = torch.randint(0, 100, (2, 9))
    adapted = model(input_ids=x).last_hidden_state
    layer = model.base_model.model.encoder.layer[0].attention.self.query
    for tokens in (1, 3, 200):  # few tokens: (x Q) A^T; many: x (A Q^T)^T
        h = torch.randn(tokens, 32)
        dense = layer.get_base_layer()(h) + h @ layer.get_delta_weight("default").T
        assert torch.allclose(layer(h), dense, atol=1e-5)
    assert layer.get_delta_weight("default").count_nonzero(1).count_nonzero() == 4  # 4 rows
    selected = {n: layer.plate_index["default"].clone() for n, layer in model.named_modules()
                if isinstance(layer, PlateLinear)}
    merged = model.merge_and_unload()
    assert torch.allclose(merged(input_ids=x).last_hidden_state, adapted, atol=1e-5)
    changed = 0
    for name, index in selected.items():
        key = name.removeprefix("base_model.model.") + ".weight"
        keep = torch.ones(original[key].shape[0], dtype=torch.bool)
        keep[index] = False
        assert torch.equal(merged.state_dict()[key][keep], original[key][keep])
        changed += int(not torch.equal(merged.state_dict()[key][~keep], original[key][~keep]))
    assert changed == len(selected) == 2 * 4


def test_peft_saves_and_loads_the_adapter(tmp_path):
    base = _tiny_bert()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, PlateConfig(r=4, target_modules=["key", "value"]))
    assert all("plate_A" in n for n, p in model.named_parameters() if p.requires_grad)
    _set_random_a(model)
    x = torch.randint(0, 100, (2, 9))
    expected = model(input_ids=x).last_hidden_state
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PLATE" and config["r"] == 4
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert {k.rsplit(".", 1)[-1] for k in saved} == {"plate_A", "plate_Q", "plate_index"}
    fresh = _tiny_bert()
    fresh.load_state_dict(original)
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    assert torch.equal(loaded(input_ids=x).last_hidden_state, expected)
    # B and Q come from the file, not from the weights they are loaded onto
    other = _tiny_bert()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loaded = PeftModel.from_pretrained(other, tmp_path / "adapter")
    for key, value in saved.items():
        module, store = key.removeprefix("base_model.model.").rsplit(".", 1)
        layer = loaded.base_model.model.get_submodule(module)
        assert torch.equal(getattr(layer, store)["default"], value)


def test_a_saved_adapter_of_another_shape_loads(tmp_path):
    """An adapter saved with one r and tau loads onto layers that first computed another r and
    k from the config (shapes follow the file)."""
    model = get_peft_model(_tiny_bert(), PlateConfig(r=4, tau=0.5, target_modules=["query"]))
    _set_random_a(model)
    x = torch.randint(0, 100, (2, 9))
    expected = model(input_ids=x).last_hidden_state
    model.save_pretrained(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    config.update(tau=0.95, r=6)
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    q_saved = model.base_model.model.encoder.layer[0].attention.self.query.plate_Q["default"]
    other = get_peft_model(_tiny_bert(), PlateConfig(r=6, tau=0.95, target_modules=["query"]))
    q_other = other.base_model.model.encoder.layer[0].attention.self.query.plate_Q["default"]
    assert q_other.shape[1] < q_saved.shape[1]  # the recomputed k differs from the saved one
    loaded = PeftModel.from_pretrained(_tiny_bert(), tmp_path / "a")
    layer = loaded.base_model.model.encoder.layer[0].attention.self.query
    assert layer.plate_index["default"].numel() == 4 and not layer.plate_A["default"].requires_grad
    assert torch.equal(loaded(input_ids=x).last_hidden_state, expected)


@pytest.mark.parametrize("recompute,selection", [("merged", "exact"), ("original", "exact"),
                                                 ("original", "official")])
def test_stream_changes_only_selected_rows(tiny_config, tiny_bert, recompute, selection,
                                           monkeypatch):
    from retain.backbones import load_backbone

    selected: dict[str, set[int]] = {}
    begin = Plate.begin_task

    def record(self, task, batches):
        begin(self, task, batches)
        for name, layer in self.model.named_modules():
            if isinstance(layer, PlateLinear):
                key = name.removeprefix("base_model.model.")
                selected.setdefault(key, set()).update(layer.plate_index["default"].tolist())

    monkeypatch.setattr(Plate, "begin_task", record)
    res, method = train_stream(tiny_config(method="plate", lr=1e-2, method_options={
        "r": 3, "recompute": recompute, "selection": selection}), progress=False)
    before = load_backbone(tiny_bert).model.state_dict()
    after = {k.removeprefix("base_model.model."): v for k, v in
             method.model.state_dict().items() if "plate_" not in k}
    assert len(selected) == 2 * 6
    for key, rows in selected.items():
        # 'merged' unloads the adapter after each task; 'original' keeps it (A = 0)
        name = key + ".weight" if key + ".weight" in after else key + ".base_layer.weight"
        w0, w1 = before[key + ".weight"], after[name]
        keep = torch.ones(w0.shape[0], dtype=torch.bool)
        keep[sorted(rows)] = False
        assert torch.equal(w0[keep], w1[keep]), key
        assert not torch.equal(w0[~keep], w1[~keep]), key
        if recompute == "original":
            assert len(rows) == 3  # the same three rows every task
    # stored = new tensors (A, head) in full + the changed rows and their indices; B and Q
    # come from the pretrained weights and are not counted
    new = sum(t.numel() for n, t in method.stored_tensors().items() if n.startswith("head."))
    assert all(not t.any() for n, t in method.stored_tensors().items() if "plate_A" in n)
    rows = sum(len(r) * (before[k + ".weight"].shape[1] + 1) for k, r in selected.items())
    assert res["cost"]["stored_parameters"] == method.stored_parameters() == new + rows


@pytest.mark.parametrize("recompute", ["merged", "original"])
def test_plate_resumes_exactly(tiny_config, monkeypatch, tmp_path, recompute):
    check_exact_resume(tiny_config, monkeypatch, tmp_path, Plate, method="plate", lr=1e-2,
                       method_options={"r": 3, "recompute": recompute})


def test_plate_on_a_grouped_query_llama_stream(tmp_path, tiny_config, monkeypatch):
    from transformers import AutoTokenizer

    from retain.backbones import resolve

    _tiny_llama(vocab_size=30522).save_pretrained(tmp_path / "llama")
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(tmp_path / "llama")
    counts, end = [], Plate.end_task

    def check_then_end(self, task, batches):  # the live adapter, before the task merges
        counts.append(check_invariants(self.model, 0.9))
        end(self, task, batches)

    monkeypatch.setattr(Plate, "end_task", check_then_end)
    res, method = train_stream(tiny_config(backbone=str(tmp_path / "llama"), method="plate",
                                           method_options={"r": 2, "recompute": "original"}),
                               progress=False)
    assert res["cost"]["trainable_parameters"] > 0
    assert counts == [2 * 7] * 3
    # 'original' keeps the adapter after the last task, absorbed into W (A = 0), so that a
    # later session goes on with the same B and Q
    layers = [m for m in method.model.modules() if isinstance(m, PlateLinear)]
    assert len(layers) == 2 * 7 and not any(m.plate_A["default"].any() for m in layers)


def test_sweep_writes_the_frontier_and_skips_finished_points(tiny_config, tmp_path, monkeypatch):
    from retain import engine
    from retain.sweep import sweep

    cfg = tiny_config(method="plate", out=str(tmp_path / "sweep"))
    frontier = sweep(cfg, {"r": ["2", "4"], "tau": ["0.5"]}, progress=False)
    assert [p["label"] for p in frontier["points"]] == ["r=2,tau=0.5", "r=4,tau=0.5"]
    first = json.loads((tmp_path / "sweep" / "r=2,tau=0.5" / "results.json").read_text())
    assert frontier["points"][0]["plasticity"] == first["metrics"]["plasticity"]
    assert first["config"]["method_options"]["r"] == 2
    assert frontier["points"][1]["trainable_parameters"] > frontier["points"][0][
        "trainable_parameters"]
    png = (tmp_path / "sweep" / "frontier.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point ran again")

    monkeypatch.setattr(engine, "run", no_training)
    done = [str(tmp_path / "sweep" / p / "results.json") for p in ("r=4,tau=0.5", "r=2,tau=0.5")]
    again = sweep(cfg, {"r": ["2", "4"], "tau": ["0.5"]}, done, progress=False)  # 2 baselines
    assert [(p["label"], p["plasticity"]) for p in again["points"]] == [
        (p["label"], p["plasticity"]) for p in frontier["points"]]
    assert again["baselines"][0]["label"] == "plate (analytic)"
    with pytest.raises(RetainError, match="another config.*epochs"):
        sweep(dataclasses.replace(cfg, epochs=3), {"r": ["2"], "tau": ["0.5"]}, progress=False)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_the_update_is_alpha_a_q_transposed_on_the_selected_rows(alpha):
    """dW = alpha B A Q^T, built by hand from the layer's A, Q and row index: no division by r
    (PLATE's scale, unlike LoRA's alpha / r), in the forward of few and many tokens alike."""
    model = get_peft_model(_tiny_bert(), PlateConfig(r=4, tau=0.9, alpha=alpha,
                                                     target_modules=["query"]))
    _set_random_a(model)
    layer = model.base_model.model.encoder.layer[0].attention.self.query
    a, q, index = layer.plate_A["default"], layer.plate_Q["default"], layer.plate_index["default"]
    by_hand = torch.zeros(layer.out_features, layer.in_features)
    by_hand[index] = alpha * a.detach() @ q.T
    assert torch.allclose(layer.get_delta_weight("default"), by_hand, atol=1e-6)
    for tokens in (1, 200):
        h = torch.randn(tokens, 32)
        expected = layer.get_base_layer()(h) + h @ by_hand.T
        assert torch.allclose(layer(h), expected, atol=1e-5)


def test_a_loaded_run_chooses_nothing_and_predicts_as_trained(tiny_config, monkeypatch):
    """retain.load rebuilds PLATE from what the checkpoint holds: no B or Q is chosen (an
    eigendecomposition per layer, all of it overwritten), and the predictions are the trained
    run's."""
    import retain
    from retain.methods.plate import layer as plate_layer

    cfg = tiny_config(method="plate", lr=1e-2, method_options={"r": 3})
    _, trained = train_stream(cfg, progress=False)
    texts = ["the dog and the cat", "red and blue", "a piano song"]
    chosen = []
    real = plate_layer.choose
    monkeypatch.setattr(plate_layer, "choose", lambda *a, **k: chosen.append(1) or real(*a, **k))
    loaded = retain.load(cfg.out)
    assert chosen == []
    assert loaded.predict(texts) == retain.load(cfg.out).predict(texts)
    again = [p["class"] for p in loaded.predict(texts)]
    import contextlib

    from retain.methods.plate import method as plate_method

    monkeypatch.setattr(plate_method, "deferred_selection", contextlib.nullcontext)
    fresh = retain.load(cfg.out)  # choosing again (the old way) gives the same predictions
    assert chosen and [p["class"] for p in fresh.predict(texts)] == again
    for name, layer in trained.plate_layers().items():
        got = dict(loaded.method.model.named_modules())[name]
        assert torch.equal(got.plate_Q["default"], layer.plate_Q["default"])
        assert torch.equal(got.plate_index["default"], layer.plate_index["default"])
