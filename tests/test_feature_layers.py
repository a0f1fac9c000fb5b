"""``--feature-layers K`` (LayUP): heads read the last K hidden states, each pooled and
L2-normalised, concatenated; retention still compares the pooled last hidden state; a run with
it reloads, exports and is applied without retain as it predicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import retain
from retain.backbones import load_backbone, pool
from retain.cli import main
from retain.errors import RetainError


def test_features_concatenate_the_last_hidden_states_each_normalised(tiny_bert):
    one, two = (load_backbone(tiny_bert, "mean", k) for k in (1, 2))
    two.model = one.model  # the same weights
    batch = one.tokenize(["the dog and the cat", "a short one"], 16)
    with torch.no_grad():
        f1, f2 = one.features(batch), two.features(batch)
        states = one.model(**batch, output_hidden_states=True).hidden_states
    assert (one.feature_size, two.feature_size) == (32, 64) and f2.shape == (2, 64)
    last = one.model(**batch).last_hidden_state  # K = 1: the pooled last state as it was
    assert torch.equal(f1, pool(last, batch["attention_mask"], "mean"))
    mask = batch["attention_mask"]
    for half, state in zip((f2[:, :32], f2[:, 32:]), states[-2:], strict=True):
        assert torch.allclose(half, torch.nn.functional.normalize(pool(state, mask, "mean"),
                                                                  dim=-1), atol=1e-6)
    assert torch.allclose(f2[:, 32:], torch.nn.functional.normalize(f1, dim=-1), atol=1e-6)


def test_a_run_reads_k_layers_reloads_and_applies_without_retain(tiny_config, tmp_path):
    from tests.conftest import reloaded_scores
    from tests.test_use import _without_retain

    cfg = tiny_config(method="first-session", head="analytic", feature_layers=2, lr=1e-2)
    res = retain.run(cfg, progress=False)
    assert res["config"]["feature_layers"] == 2
    trained = retain.load(cfg.out)
    assert trained.method.head.projection.shape[0] == 64  # the head reads 2 x 32 features
    batch = trained.backbone.tokenize(["the dog and the cat"], 16)
    with torch.no_grad():  # retention's view: the pooled last hidden state, 32 wide
        assert trained.method.represent(batch).shape == (1, 32)
    assert reloaded_scores(cfg.out, res) == pytest.approx(res["matrix"][-1], abs=1e-6)
    dest = trained.export(tmp_path / "export")
    info = json.loads((dest / "retain.json").read_text())
    assert info["feature_layers"] == 2
    assert "last 2 hidden states" in (dest / "adapter" / "README.md").read_text()
    texts = [json.loads(line)["text"] for line in Path(cfg.data).read_text().splitlines()][::7]
    theirs = _without_retain(dest, texts)
    ours = trained.predict(texts)
    assert [t["class"] for t in theirs] == [o["class"] for o in ours]
    assert [t["score"] for t in theirs] == pytest.approx([o["score"] for o in ours], abs=1e-4)


def test_an_image_backbones_last_slice_is_its_normed_last_state():
    """A ViT's hidden_states[-1] precedes its final LayerNorm; K > 1 ends with what K = 1 reads."""
    vit = load_backbone("tiny-vit", "auto", 2)
    batch = {"pixel_values": torch.randn(2, 3, 32, 32)}
    with torch.no_grad():
        f2 = vit.features(batch)
        f1 = vit.pooled(batch)
    assert torch.allclose(f2[:, 32:], torch.nn.functional.normalize(f1, dim=-1), atol=1e-6)


def test_more_layers_than_the_backbone_has_is_one_line(tiny_bert, jsonl_file, tmp_path, capsys):
    args = ["run", "--method", "frozen-ncm", "--data", jsonl_file, "--backbone", tiny_bert,
            "--profile", "smoke", "--no-retention", "--feature-layers", "4",
            "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--feature-layers 4 is more than" in err and "give 3 or fewer" in err
    assert len(err.splitlines()) == 1
    assert main([*args[:-4], "--feature-layers", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--feature-layers must be 1 or more" in capsys.readouterr().err


def test_ntk_cl_and_language_models_refuse_feature_layers_before_any_work(tiny_config):
    from retain import RunConfig
    from retain.comparison import compare

    with pytest.raises(RetainError, match="ntk-cl fuses its own two views.*drop --feature"):
        RunConfig(method="ntk-cl", feature_layers=2).check()
    with pytest.raises(RetainError, match="have no head: drop it"):
        RunConfig(method="seq-ft", benchmark="lm3", feature_layers=2).check()
    cfg = tiny_config(feature_layers=2)
    with pytest.raises(RetainError, match="ntk-cl fuses"):  # compare: before the first run
        compare(cfg, ["frozen-ncm", "ntk-cl"], [0], progress=False)
    assert not (Path(cfg.out) / "runs").exists()


def test_a_run_saved_before_the_field_is_reused_resumed_and_compared(tiny_config, tmp_path,
                                                                      monkeypatch):
    """results.json and the checkpoint of a run made before ``feature_layers`` existed lack
    the key: the field counts as what a run resolves it to (1), so the finished run is read
    back, not refused; a crashed one resumes; ``compare --runs`` puts it with a new run."""
    from retain.comparison import compare_runs
    from retain.engine import run_or_load, train_stream
    from retain.methods.baselines import FrozenNCM
    from tests.conftest import crash_on_task

    def strip(path: Path, key: str) -> None:
        data = json.loads(path.read_text())
        data[key].pop("feature_layers")
        path.write_text(json.dumps(data))

    cfg = tiny_config(method="frozen-ncm", out=str(tmp_path / "old"))
    first = retain.run(cfg, progress=False)
    strip(Path(cfg.out) / "results.json", "config")
    assert run_or_load(cfg, progress=False)["matrix"] == first["matrix"]  # read, not refused

    crashed = tiny_config(method="frozen-ncm", out=str(tmp_path / "crashed"))
    restore = crash_on_task(monkeypatch, FrozenNCM, 1)
    with pytest.raises(KeyboardInterrupt):
        retain.run(crashed, progress=False)
    restore()
    strip(Path(crashed.out) / "checkpoint" / "state.json", "config")
    resumed, _ = train_stream(crashed, resume=True, progress=False)
    assert resumed["matrix"] == first["matrix"]

    new = tiny_config(method="frozen-ncm", seed=1, out=str(tmp_path / "new"))
    retain.run(new, progress=False)
    got = compare_runs([cfg.out, new.out], tmp_path / "cmp")
    assert list(got["methods"]) == ["frozen-ncm"]  # one row of two seeds, not two rows
