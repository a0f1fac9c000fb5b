"""Task kinds beyond text classification: perplexity matrices and their metrics, lm3, the
user's LM files, image folders, every method on each, resume, stored counts and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retain import RunConfig, run
from retain.cli import main
from retain.engine import train_stream
from retain.kinds import LM, token_nll
from retain.metrics import summary
from tests.conftest import crash_on_task, reloaded_scores, small_head

# every projection of a Llama block: attention (grouped-query k/v: 32 -> 16) and the gated MLP
LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lm3(tmp_path, **kw) -> RunConfig:
    base = dict(benchmark="lm3", profile="smoke", out=str(tmp_path / "lm3"), retention=True)
    base.update(kw)
    return RunConfig(**base)


def test_perplexity_metrics_on_a_hand_worked_matrix():
    P = [[10.0], [8.0, 20.0], [15.0, 25.0, 30.0]]
    m = summary(P, score="perplexity", higher_is_better=False)
    assert m["final_perplexity"] == pytest.approx(70 / 3)
    assert m["average_incremental_perplexity"] == pytest.approx((10 + 14 + 70 / 3) / 3)
    # task 1: lowest before the end 8 (after task 2), final 15 -> +7; task 2: 20 -> 25, +5
    assert m["forgetting"] == pytest.approx(6.0)
    assert m["relative_forgetting"] == pytest.approx((7 / 8 + 5 / 20) / 2)
    assert m["bwt"] == pytest.approx(((10 - 15) + (20 - 25)) / 2)  # negative: forgot
    assert m["plasticity"] == pytest.approx(20.0)
    assert m["final_perplexity_geometric"] == pytest.approx((15 * 25 * 30) ** (1 / 3))
    # the same matrix read as accuracy keeps the accuracy signs
    assert summary(P)["forgetting"] == pytest.approx(((10 - 15) + (20 - 25)) / 2)


def test_token_nll_skips_padding_and_shifts():
    logits = torch.zeros(2, 4, 5)  # uniform over 5 tokens: perplexity exactly 5
    labels = torch.tensor([[1, 2, 3, 4], [1, 2, -100, -100]])
    nll, n = token_nll(logits, labels)
    assert int(n) == 3 + 1  # the first token of each row is never predicted
    assert float(torch.exp(nll / n)) == pytest.approx(5.0)


def test_lm3_stream_is_defined_exactly(tmp_path):
    from retain.backbones import load_backbone
    from retain.data.lm3 import definitions, encyclopedia, news

    assert definitions()[0].startswith("entity: that which is perceived")
    assert len(news()) == 300 and all("{{" not in d and "[[" not in d for d in encyclopedia())
    plan = lm3(tmp_path).plan()
    cfg = plan.config
    assert (cfg.cap, cfg.test_cap, cfg.steps, cfg.max_length, cfg.backbone) == (
        16, 8, 4, 64, "tiny-llama")
    stream = plan.build_stream(load_backbone(cfg.backbone))
    assert stream.kind is LM and [t.name for t in stream.tasks] == [
        "definitions", "news", "encyclopedia"]
    for task in stream.tasks:
        assert (len(task.train), len(task.test)) == (16, 8)
        rows = [tuple(it["input_ids"]) for it in task.train.items + task.test.items]
        assert {len(r) for r in rows} == {64} and len(set(rows)) == len(rows)  # disjoint


@pytest.mark.parametrize("method", ["seq-ft", "seq-lora", "inflora", "plate", "share", "joint",
                                    "grow"])
def test_every_method_runs_on_lm3_smoke(tmp_path, method):
    options = {} if method in ("seq-ft", "grow") else {"target_modules": LLAMA_ALL}
    lr = {"lr": 1e-3} if method == "grow" else {}  # its copies barely move a random model
    res, m = train_stream(lm3(tmp_path, method=method, method_options=options, **lr),
                          progress=False)
    assert res["score"] == {"name": "perplexity", "direction": "lower"}
    assert [len(r) for r in res["matrix"]] == [1, 2, 3]
    assert all(np.isfinite(v) and v > 1 for r in res["matrix"] for v in r)
    assert "task_incremental_matrix" not in res and res["head"] == "none"
    ret = res["retention"]
    assert ret["shakespeare_perplexity"]["untouched"] > 1 and ret["kl_from_untouched"][
        "score"] >= 0
    if method != "joint":  # something trained: the model moved away from the untouched one
        assert ret["kl_from_untouched"]["score"] > 0
    # stored parameters against a hand count on the tiny Llama (2 layers, width 32, GQA 32->16,
    # MLP 64): per layer, q 32x32, k and v 16x32, o 32x32, gate and up 64x32, down 32x64
    shapes = [(32, 32), (16, 32), (16, 32), (32, 32), (64, 32), (64, 32), (32, 64)]
    if method in ("seq-lora", "joint"):  # rank 8: A (8 x in) and B (out x 8) per projection
        assert res["cost"]["stored_parameters"] == 2 * sum(8 * i + o * 8 for o, i in shapes)
    if method == "seq-ft":  # every parameter once (tied embedding and LM head: once)
        assert res["cost"]["stored_parameters"] == m.model.num_parameters() == 49152 * 32 + 2 * (
            sum(o * i for o, i in shapes) + 2 * 32) + 32
    if method == "grow":  # a copy of gate, up and down per block and task, nothing else
        assert res["cost"]["stored_parameters"] == 3 * 2 * 3 * 64 * 32
    if method == "inflora":  # the merged matrices in full, and the memories' bases
        bases = sum(mem.basis.numel() for mem in m.memories.values())
        assert res["cost"]["stored_parameters"] == 2 * sum(o * i for o, i in shapes) + bases
        assert len(m.memories) == 2 * 4  # q/k/v share an input, gate/up share one
    if method == "plate":  # r changed rows of each W with an index each; A is merged into W
        # after each task and zero at every checkpoint (the adapter stays for a later task)
        assert not any(p.any() for n, p in m.named_parameters() if "plate_A" in n)
        r = m.config.r
        assert res["cost"]["stored_parameters"] == 2 * sum(r * (i + 1) for _, i in shapes)


def test_lm3_resume_gives_the_same_perplexity_matrix(tmp_path, monkeypatch):
    from retain.methods.inflora.method import InfLoRA

    kw = dict(method="inflora", method_options={"target_modules": ["q_proj", "k_proj",
                                                                    "v_proj"]})
    full = run(lm3(tmp_path, out=str(tmp_path / "full"), **kw), progress=False)
    restore = crash_on_task(monkeypatch, InfLoRA, 2)
    cfg = lm3(tmp_path, out=str(tmp_path / "crashed"), **kw)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    restore()
    resumed = run(cfg, resume=True, progress=False)
    assert resumed["matrix"] == full["matrix"]


def test_users_lm_file_makes_one_task_per_value(lm_file, tmp_path):
    res = run(RunConfig(data=lm_file, benchmark=None, kind="lm", profile="smoke",
                        max_length=16, retention=False, out=str(tmp_path / "o")), progress=False)
    assert [t["name"] for t in res["tasks"]] == ["animals", "food"]
    assert res["config"]["kind"] == "lm" and res["config"]["backbone"] == "tiny-llama"
    assert [len(r) for r in res["matrix"]] == [1, 2]


def test_image_folder_stream(image_folder, tmp_path):

    plan = RunConfig(data=image_folder, benchmark=None, profile="smoke", classes_per_task=2,
                    out=str(tmp_path / "o")).plan()
    cfg = plan.config
    assert cfg.backbone == "tiny-vit" and cfg.kind == "classification"
    stream = plan.build_stream()
    assert stream.class_names == [["circle", "cross", "square", "stripe"][c]
                                  for c in stream.class_order]
    assert [(len(t.train), len(t.test)) for t in stream.tasks] == [(16, 4), (16, 4)]
    assert all(Path(it["image"]).suffix == ".png" for it in stream.tasks[0].train.items)


@pytest.mark.parametrize("method", ["seq-ft", "seq-lora", "inflora", "plate", "frozen-ncm",
                                    "ntk-cl", "grow", "joint"])
def test_every_method_runs_on_images(image_folder, tmp_path, method):
    res = run(RunConfig(method=method, data=image_folder, benchmark=None, profile="smoke",
                        head_options=small_head(method),
                        classes_per_task=2, epochs=2, out=str(tmp_path / "o")), progress=False)
    assert res["score"]["name"] == "accuracy" and [len(r) for r in res["matrix"]] == [1, 2]
    assert res["retention"] is None  # no pretrained image backbone to compare with
    if method != "frozen-ncm":
        assert res["cost"]["trainable_parameters"] > 0
    else:  # 4 class means of width 32 and their counts, nothing of the backbone
        assert res["cost"]["stored_parameters"] == 4 * 32 + 4
    # the images' path end to end: the reloaded run scores each task's images as it did
    assert reloaded_scores(tmp_path / "o", res) == pytest.approx(res["matrix"][-1], abs=1e-6)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_smoke_stream(tmp_path):
    from scripts.fashion_mnist_folder import write_folder

    folder = write_folder(tmp_path / "fmnist", per_class=8)
    res = run(RunConfig(method="seq-lora", data=str(folder), benchmark=None, profile="smoke",
                        out=str(tmp_path / "o")), progress=False)
    assert [t["train"] for t in res["tasks"]] == [24, 24, 24]  # 3 tasks of 3 classes, 8 each
    assert [t["test"] for t in res["tasks"]] == [6, 6, 6] and len(res["matrix"]) == 3


def test_a_method_that_cannot_serve_a_kind_says_so_before_loading(monkeypatch, capsys):
    import retain.engine

    def never(*a, **k):
        raise AssertionError("loaded a backbone")

    monkeypatch.setattr(retain.engine, "backbone_of", never)
    assert main(["run", "--method", "frozen-ncm", "--benchmark", "lm3", "--profile", "smoke",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frozen-ncm cannot serve 'lm'" in err


def test_bad_kind_inputs_get_one_line_errors(tmp_path, image_folder, jsonl_file, tiny_bert,
                                             capsys):
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    for f in list(Path(image_folder, "circle").iterdir())[:3]:
        (one / "only" / f.name).write_bytes(f.read_bytes())
    cases = [
        (["--data", str(one)], "at least 2"),
        (["--data", jsonl_file, "--kind", "lm"], "no 'task' column"),
        (["--benchmark", "lm3", "--head", "growing"], "no head"),
        (["--benchmark", "lm3", "--backbone", tiny_bert], "needs a causal LM"),
        (["--benchmark", "wordnet45", "--kind", "lm"], "drop --kind"),
    ]
    for args, message in cases:
        code = main(["run", "--profile", "smoke", "--quiet", "--no-retention", "--out",
                     str(tmp_path / "o"), *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (args, err)


def test_resolved_config_saves_every_default(jsonl_file, tmp_path):
    cfg = RunConfig(data=jsonl_file, benchmark=None, profile="smoke", out=str(tmp_path)
                    ).resolved()
    assert (cfg.classes_per_task, cfg.cap, cfg.tasks, cfg.class_order_seed) == (3, 40, 3, 0)
    wn = RunConfig().resolved()
    assert (wn.classes_per_task, wn.cap, wn.tasks, wn.class_order_seed, wn.backbone) == (
        5, 300, None, 1993, "minilm")
    assert RunConfig(cap=0).resolved().cap is None  # 0 keeps all
    saved = json.loads(json.dumps(wn.to_dict()))
    assert saved["classes_per_task"] == 5


@pytest.mark.smollm2
def test_smollm2_loads_from_its_cached_safetensors():
    from retain.backbones import load_backbone, smollm2_dir

    b = load_backbone("smollm2")
    c = b.model.config
    assert (b.modality, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            c.vocab_size) == ("causal-lm", 30, 9, 3, 49152)
    assert (smollm2_dir() / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((smollm2_dir() / "config.json").read_text())
    ids = b.tokenizer("To be, or not to be, that is the question:", return_tensors="pt")
    with torch.no_grad():
        logits = b.model(**ids).logits
    assert torch.isfinite(logits).all()


def test_a_local_vit_folder_loads_with_its_image_processor(tmp_path, image_folder):
    from retain.backbones import load_backbone, tiny

    model, processor = tiny("tiny-vit")
    model.save_pretrained(tmp_path / "vit")
    processor.save_pretrained(tmp_path / "vit")
    b = load_backbone(str(tmp_path / "vit"))
    assert (b.modality, b.pooling) == ("image", "cls")
    image = next(Path(image_folder, "cross").iterdir())
    batch = b.batch([{"image": str(image)}] * 2, 0)
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert b.features(batch).shape == (2, 32)
    reference = load_backbone("tiny-vit")
    assert torch.allclose(reference.features(batch), b.features(batch), atol=1e-6)
