"""Function-preserving growth: the grown model computes the same function (float64 on tiny BERT
and Llama, float32 on SmolLM2), only the new copy trains and everything else stays
bit-identical, a grown model reloads with identical outputs, the stored numbers are the copies,
and every head scheme runs."""

import pytest
import torch

from retain.backbones import load_backbone, tiny
from retain.engine import train_stream
from retain.errors import RetainError
from retain.methods.grow import Grow
from retain.methods.grow.layer import mlp_sites
from tests.conftest import check_exact_resume, reloaded_scores


def _outputs(model, name, x):
    out = model(**x)
    return out.logits if name == "tiny-llama" else out.last_hidden_state


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_growth_preserves_the_function_in_float64(name):
    model, _ = tiny(name)
    model = model.double().eval()
    x = {"input_ids": torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        before = _outputs(model, name, x)
        sites = mlp_sites(model)
        # twice, as for two tasks: the latest copy split in two, then three more of the
        # pretrained units
        for factor, source in ((2, "latest"), (3, "latest"), (3, "original")):
            for site in sites:
                site.grow(factor, source)
            diff = (_outputs(model, name, x) - before).abs().max().item()
            assert diff <= 1e-9, (factor, source, diff)
        assert sites[0].widths() == [64, 64, 128, 128]
        for copy in sites[0].copies()[-3:]:  # the copies are in the path: moving one shows
            copy.weight.add_(0.1 * torch.randn_like(copy.weight))
        assert (_outputs(model, name, x) - before).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_growth_in_half_precision_stays_within_one_step_of_the_largest_output(name, dtype):
    """In bf16 and fp16 a copy's share W_down / g is rounded (exact for g = 2, not for g = 3) and
    the grown down-projection adds its parts in that precision: after each growth every output
    stays within one epsilon of the dtype times the largest output (one rounding step there)."""
    model, _ = tiny(name)
    model = model.to(dtype).eval()
    x = {"input_ids": torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(0))}
    eps = torch.finfo(dtype).eps
    with torch.no_grad():
        before = _outputs(model, name, x).float()
        sites = mlp_sites(model)
        for factor, source in ((2, "latest"), (3, "latest"), (3, "original")):
            for site in sites:
                site.grow(factor, source)
            diff = (_outputs(model, name, x).float() - before).abs().max().item()
            assert diff <= eps * before.abs().max().item(), (factor, source, diff)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_growing_again_from_a_trained_copy_copies_that_copy(name):
    """source=latest after the first copy has moved (as training moves it): the function is
    kept to 1e-9 in float64, the new copy's up (and gate) rows are the trained copy's, repeated
    g - 1 times, and its down columns the trained copy's divided by g, as the trained copy's
    own down-projection now is."""
    model, _ = tiny(name)
    model = model.double().eval()
    x = {"input_ids": torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(1))}
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        sites = mlp_sites(model)
        for site in sites:
            site.grow(2)
            for copy in site.copies():  # "train" the first copy: every tensor moves
                for t in copy.parameters():
                    t.add_(0.2 * torch.randn(t.shape, generator=g, dtype=t.dtype))
        trained = [([(u.copies[0].weight.clone(), u.copies[0].bias) for u in site.ups()],
                    site.down_layer().copies[0].weight.clone()) for site in sites]
        before = _outputs(model, name, x)
        for site in sites:
            site.grow(3, "latest")
        assert (_outputs(model, name, x) - before).abs().max() <= 1e-9
        for site, (ups, down) in zip(sites, trained, strict=True):
            for up, (weight, bias) in zip(site.ups(), ups, strict=True):
                assert torch.equal(up.copies[0].weight, weight)
                assert torch.equal(up.copies[1].weight, torch.cat([weight] * 2))
                if bias is not None:
                    assert torch.equal(up.copies[1].bias, torch.cat([bias] * 2))
            first, new = site.down_layer().copies
            assert torch.allclose(first.weight, down / 3, rtol=1e-15, atol=0)
            assert torch.allclose(new.weight, torch.cat([down / 3] * 2, 1), rtol=1e-15, atol=0)


@pytest.mark.smollm2
def test_smollm2_with_every_mlp_grown_keeps_its_logits_in_float32():
    backbone = load_backbone("smollm2")
    model = backbone.model.eval()
    assert next(model.parameters()).dtype == torch.float32
    enc = backbone.processor(["The quick brown fox jumps over the lazy dog.",
                              "To be, or not to be, that is the question:"],
                             return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**enc).logits
        sites = mlp_sites(model)
        assert len(sites) == 30
        for site in sites:
            site.grow(2)
        after = model(**enc).logits
    assert torch.equal(after.argmax(-1), before.argmax(-1))
    assert (after - before).abs().max() < 1e-5 * before.abs().max()


def _grow_config(tiny_config, **kw):
    """Every block grown (classification's default grows a third of them) unless the test
    says otherwise."""
    options = {"select": "all", **kw.pop("method_options", {})}
    return tiny_config(method="grow", method_options=options, **kw)


def watch_what_trains(monkeypatch) -> list:
    """Per task: its index, the parameters trainable after ``begin_task``, and every
    parameter's value then; at ``end_task`` exactly the trainable ones must have moved."""
    seen = []
    begin, end = Grow.begin_task, Grow.end_task

    def record_begin(self, task, batches):
        begin(self, task, batches)
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        seen.append((task.index, trainable,
                     {n: p.detach().clone() for n, p in self.model.named_parameters()}))

    def check_end(self, task, batches):
        _, trainable, before = seen[-1]
        for name, p in self.model.named_parameters():
            assert torch.equal(p, before[name]) != (name in trainable), name
        end(self, task, batches)

    monkeypatch.setattr(Grow, "begin_task", record_begin)
    monkeypatch.setattr(Grow, "end_task", check_end)
    return seen


def test_only_the_new_copy_trains_and_the_rest_stays_bit_identical(tiny_config, monkeypatch):
    seen = watch_what_trains(monkeypatch)
    res, method = train_stream(_grow_config(tiny_config), progress=False)
    assert len(seen) == 3
    for index, trainable, _ in seen:  # the backbone trains exactly this task's copy
        assert len(trainable) == 2 * 3 and all(f".copies.{index}." in n for n in trainable)
    # stored: every task's copies (up 64x32 + bias 64, down 32x64 per block, 2 blocks) and the
    # head, nothing else of the model
    model_stored = {k for k in method.stored_tensors() if k.startswith("model.")}
    assert model_stored and all(".copies." in k for k in model_stored)
    assert sum(method.stored_tensors()[k].numel() for k in model_stored) == 3 * 2 * (
        64 * 32 + 64 + 32 * 64)
    assert method.widths() == {0: [64, 64, 64, 64], 1: [64, 64, 64, 64]}


def test_a_reloaded_grown_model_gives_identical_outputs(tiny_config, tmp_path):
    from retain import checkpoint

    cfg = _grow_config(tiny_config, method_options={"layers": [1], "source": "original"})
    _, trained = train_stream(cfg, progress=False)
    plan = cfg.plan()
    fresh = plan.build_method()
    backbone = load_backbone(plan.config.backbone)
    stream = plan.build_stream(backbone)
    fresh.setup(backbone, stream)
    state = checkpoint.read_state(tmp_path / "run" / "checkpoint")
    fresh.load_state(state["method_state"])
    checkpoint.load_weights(tmp_path / "run" / "checkpoint", fresh, state)
    assert fresh.widths() == trained.widths() == {0: [64], 1: [64, 64, 64, 64]}
    batch = trained.backbone.processor(["the dog and the cat", "red and blue"],
                                       padding=True, return_tensors="pt")
    trained.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh.predict(dict(batch)), trained.predict(dict(batch)))


def test_resume_is_exact(tiny_config, monkeypatch, tmp_path):
    check_exact_resume(tiny_config, monkeypatch, tmp_path, Grow, method="grow")


@pytest.mark.parametrize("head", ["task-heads", "growing", "prototypes", "analytic", "aligned"])
def test_every_head_runs(tiny_config, head):
    cfg = _grow_config(tiny_config, head=head, head_options={
        "projection": 64} if head == "analytic" else {})
    res, _ = train_stream(cfg, progress=False)
    assert [len(r) for r in res["matrix"]] == [1, 2, 3]
    # the grown widths and the head reload to the same predictions as trained
    assert reloaded_scores(cfg.out, res) == pytest.approx(res["matrix"][-1], abs=1e-6)


@pytest.mark.parametrize("select", ["spread", "gradient"])
def test_selective_growth_grows_the_chosen_share_every_task(tiny_config, select):
    _, method = train_stream(_grow_config(tiny_config, method_options={
        "select": select, "fraction": 0.5}), progress=False)
    grown = [[b for t, b, _ in method.growths if t == task] for task in range(3)]
    assert all(len(g) == 1 for g in grown)  # half of 2 blocks, every task
    if select == "spread":
        assert grown == [[0], [0], [0]]
    widths = method.widths()
    assert sorted(len(w) - 1 for w in widths.values()) == sorted(
        sum(g == [b] for g in grown) for b in widths)


def test_gradient_rule_ranks_by_relative_gradient(tiny_config):
    plan = _grow_config(tiny_config).plan()
    cfg = plan.config
    method = plan.build_method()
    backbone = load_backbone(cfg.backbone)
    stream = plan.build_stream(backbone)
    method.setup(backbone, stream)
    method.head.begin_task(stream.tasks[0])
    collate = [{k: v for k, v in backbone.processor(["the dog", "red and green"], padding=True,
                                                      return_tensors="pt").items()}]
    collate[0]["labels"] = torch.tensor(stream.tasks[0].classes[:2])
    with torch.no_grad():  # make block 0's MLP output matter far more than block 1's
        method.sites[1].down_weight().mul_(1e-3)
    scores = method.gradient_scores(lambda: collate)
    assert scores[1] > 100 * scores[0] > 0  # relative to the weight's size
    assert not any(p.requires_grad for p in method.model.parameters())
    method.config.select = "gradient"  # a third of 2 blocks: the one
    assert method.chosen(lambda: collate) == [method.sites[1]]


@pytest.mark.parametrize("options, kw, message", [
    ({"also_train": ["intermediate"]}, {}, "symmetric"),
    ({"also_train": ["nothing-like-it"]}, {}, "matches no parameter"),
    ({"layers": [5]}, {}, "out of range"),
    ({"factor": 1}, {}, "factor must be >= 2"),
    ({}, {"weight_decay": 0.01}, "takes no weight decay"),
])
def test_bad_options_are_refused(tiny_config, options, kw, message):
    with pytest.raises(RetainError, match=message):
        train_stream(_grow_config(tiny_config, method_options=options, **kw), progress=False)


def test_g_train_trains_the_named_modules_of_the_grown_blocks_only(tiny_config, monkeypatch):
    """G-Train with a different block grown for each task (0, 1, 0): a task trains the new copy
    and the attention of the block grown for it, nothing of the other block, and everything
    outside that set stays bit-identical; stored: every copy and both blocks' attention."""
    monkeypatch.setattr(Grow, "chosen", lambda self, batches: [self.sites[len(self.growths) % 2]])
    seen = watch_what_trains(monkeypatch)
    _, method = train_stream(_grow_config(tiny_config, method_options={
        "also_train": ["attention"]}), progress=False)
    attention = {i: {n for n, _ in method.model.named_parameters()
                     if n.startswith(f"encoder.layer.{i}.attention.")} for i in (0, 1)}
    assert all(attention.values())
    for index, trainable, _ in seen:
        block = index % 2
        copies = {n for n in trainable if ".copies." in n}
        assert len(copies) == 3 and all(f"encoder.layer.{block}." in n for n in copies)
        assert trainable - copies == attention[block], index
    stored = {k.removeprefix("model.") for k in method.stored_tensors() if k.startswith("model.")}
    assert attention[0] | attention[1] <= stored


def test_g_train_trains_and_stores_the_named_modules(tiny_config):
    res, method = train_stream(_grow_config(tiny_config, method_options={
        "also_train": ["attention"]}), progress=False)
    stored = method.stored_tensors()
    assert any("attention" in k for k in stored)
    attention = sum(p.numel() for n, p in method.model.named_parameters() if "attention" in n)
    copies = 3 * 2 * (64 * 32 + 64 + 32 * 64)
    assert sum(v.numel() for k, v in stored.items() if k.startswith("model.")) == (
        attention + copies)


def test_classification_grows_a_third_of_the_blocks_by_default_language_every_block():
    """The classification default is the paper's third of the blocks, evenly spaced (chosen on
    both benchmarks' validation splits); language modelling keeps every block."""
    from retain import RunConfig

    text = RunConfig(method="grow", benchmark="wordnet45").resolved().method_options
    assert (text["select"], text["fraction"], text["factor"]) == ("spread", 1 / 3, 2)
    assert RunConfig(method="grow", benchmark="lmfar").resolved().method_options[
        "select"] == "all"
    mine = RunConfig(method="grow", benchmark="debian30", method_options={"select": "all"})
    assert mine.resolved().method_options["select"] == "all"  # the user's value wins
