"""Using a finished run: ``retain predict``, ``retain export`` (loaded back without retain, by
plain transformers and peft, in a fresh process), ``retain.load``, and the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import retain
from retain.cli import main
from retain.errors import RetainError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "predict_without_retain.py"


def _without_retain(export: Path, texts: list[str], *extra: str, imports: bool = False
                    ) -> list[dict]:
    """The example script in a fresh process; it must not import retain (unless ``imports``:
    a Share adapter, whose peft type retain registers)."""
    code = (f"import runpy, sys; sys.argv = {[str(SCRIPT), str(export), *texts, *extra]!r}; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__'); "
            f"assert {imports} or not any(m == 'retain' or m.startswith('retain.') "
            "for m in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("method", ["seq-lora", "share"])
def test_export_round_trip_without_retain(method, tiny_config, tiny_bert, jsonl_file, tmp_path):
    """Train, predict with `retain predict`, export, and predict again in a fresh process with
    transformers alone (merged model) and with peft (base + adapter): same classes and scores
    to 1e-5."""
    cfg = tiny_config(method=method, out=str(tmp_path / "run"))
    retain.run(cfg, progress=False)
    preds = tmp_path / "preds.jsonl"
    assert main(["predict", cfg.out, "--data", jsonl_file, "--out", str(preds)]) == 0
    ours = [json.loads(line) for line in preds.read_text().splitlines()]
    rows = [json.loads(line) for line in Path(jsonl_file).read_text().splitlines()]
    assert [o["text"] for o in ours] == [r["text"] for r in rows]
    assert main(["export", cfg.out, "--to", str(tmp_path / "export")]) == 0
    info = json.loads((tmp_path / "export" / "retain.json").read_text())
    assert info["adapter"] == "adapter" and info["head"]["scheme"] == cfg.resolved().head
    texts = [r["text"] for r in rows[::7]]
    expected = ours[::7]
    for extra in ((), ("--peft", tiny_bert)):
        theirs = _without_retain(tmp_path / "export", texts, *extra,
                                 imports=bool(extra) and method == "share")
        assert [t["class"] for t in theirs] == [e["class"] for e in expected]
        for t, e in zip(theirs, expected, strict=True):
            assert abs(t["score"] - e["score"]) <= 1e-5 * max(1.0, abs(e["score"]))
    # the merged model differs from the untouched one: the export holds the training
    from transformers import AutoModel

    merged = AutoModel.from_pretrained(tmp_path / "export" / "model")
    base = AutoModel.from_pretrained(tiny_bert)
    changed = [n for n, p in merged.named_parameters()  # the pooler is not exported (unused)
               if not n.startswith("pooler.") and not torch.equal(p, base.state_dict()[n])]
    assert changed and all("query" in n or "value" in n for n in changed)


@pytest.mark.parametrize("head", ["task-heads", "growing", "prototypes", "analytic", "aligned"])
def test_every_exported_head_gives_the_heads_logits(head, tiny_config):
    retain.run(tiny_config(method="frozen-ncm", head=head), progress=False)
    trained = retain.load(tiny_config().out)
    torch.manual_seed(0)
    features = torch.randn(7, 32)
    exported = trained.method.head.export()
    ours = trained.method.head.logits(features).double()
    theirs = exported.logits(features, len(trained.class_names))
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = torch.isfinite(ours)
    assert torch.allclose(ours[finite], theirs[finite], rtol=1e-5, atol=1e-6)
    assert finite.any()


def test_load_predicts_as_the_run_scored(tiny_config, jsonl_file):
    """retain.load rebuilds the run without its data: its predictions score the run's own test
    items as the run did (the last row of the accuracy matrix)."""
    from retain.data import build_stream

    cfg = tiny_config(method="seq-lora")
    results = retain.run(cfg, progress=False)
    trained = retain.load(cfg.out)
    assert trained.tasks_done == 3 and "seq-lora" in repr(trained)
    stream = build_stream(cfg.resolved(), trained.backbone)
    accuracies = []
    for task in stream.tasks:
        preds = trained.predict([dict(it) for it in task.test.items])
        names = [stream.class_names[c] for c in task.test.labels]
        hits = [p["class"] == n for p, n in zip(preds, names, strict=True)]
        accuracies.append(sum(hits) / len(names))
    assert accuracies == pytest.approx(results["matrix"][-1])


def test_grow_exports_one_wider_mlp_with_the_same_function(tiny_config, tmp_path):
    """Blocks grown unequally (block 0 twice, block 1 never): the export pads every MLP to
    the widest with zero units, and plain transformers computes the same features."""
    from transformers import AutoModel

    cfg = tiny_config(method="grow", head="prototypes", method_options={"layers": [0]})
    retain.run(cfg, progress=False)
    trained = retain.load(cfg.out)
    dest = trained.export(tmp_path / "export")
    model = AutoModel.from_pretrained(dest / "model").eval()
    assert model.config.intermediate_size == 64 * 4  # 64, +64, +128 (factor 2, latest)
    batch = trained.backbone.batch([{"text": "the dog and the cat"}, {"text": "red"}], 32)
    ours = trained.method.features(batch)
    hidden = model(**batch).last_hidden_state
    from retain.backbones import pool

    theirs = pool(hidden, batch["attention_mask"], trained.backbone.pooling)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_ntk_cl_predicts_but_refuses_to_export(tiny_config, tmp_path, capsys):
    cfg = tiny_config(method="ntk-cl", epochs=1)
    retain.run(cfg, progress=False)
    assert len(retain.load(cfg.out).predict(["the dog", "red"])) == 2
    assert main(["export", cfg.out, "--to", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "beside the encoder" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_language_model_predicts_perplexity_and_exports(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lm"
    retain.run(method="seq-lora", benchmark="lm3", profile="smoke", backbone="tiny-llama",
               retention=False, out=str(out), progress=False)
    trained = retain.load(out)
    rows = trained.predict(["The cat sat on the mat and looked at the door.", "a"])
    assert rows[0]["perplexity"] > 1 and rows[0]["tokens"] > 2
    assert rows[1]["perplexity"] is None  # one token: nothing to score
    dest = trained.export(tmp_path / "export")
    info = json.loads((dest / "retain.json").read_text())
    assert info["model_class"] == "AutoModelForCausalLM" and "head" not in info
    model = AutoModelForCausalLM.from_pretrained(dest / "model").eval()
    batch = trained.backbone.batch([{"input_ids": [5, 6, 7, 8]}], 16)
    ours = trained.method.predict(batch)
    theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_export_keeps_an_existing_folder_unless_told(tiny_config, tmp_path):
    cfg = tiny_config(method="frozen-ncm")
    retain.run(cfg, progress=False)
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(RetainError, match="not empty.*overwrite=True"):
        retain.load(cfg.out).export(dest)
    assert (dest / "mine.txt").read_text() == "keep me"
    retain.load(cfg.out).export(dest, overwrite=True)
    assert (dest / "retain.json").is_file() and not (dest / "mine.txt").exists()


def test_python_api_overwrite_and_python_names_in_errors(tiny_config, tmp_path):
    cfg = tiny_config(method="frozen-ncm")
    first = retain.run(cfg, progress=False)
    with pytest.raises(RetainError, match="add resume=True") as e:
        retain.run(cfg, progress=False)
    assert "--" not in str(e.value)
    again = retain.run(cfg, progress=False, overwrite=True)  # a notebook cell run twice
    assert again["matrix"] == first["matrix"]
    with pytest.raises(RetainError, match="nothing to resume.*drop resume=True"):
        retain.run(cfg, out=str(tmp_path / "none"), resume=True, progress=False)
    with pytest.raises(RetainError, match="unknown RunConfig field.*colour"):
        retain.run(colour="red")
    with pytest.raises(RetainError, match="no checkpoint"):
        retain.load(tmp_path / "none")


def test_image_run_predicts_a_folder_and_python_images(image_folder, tmp_path):
    from PIL import Image

    out = tmp_path / "img"
    retain.run(method="frozen-ncm", data=image_folder, benchmark=None, profile="smoke",
               classes_per_task=2, retention=False, out=str(out), progress=False)
    trained = retain.load(out)
    rows = trained.predict(image_folder)
    assert len(rows) == sum(1 for _ in Path(image_folder).rglob("*.png"))
    assert all(r["class"] in trained.class_names for r in rows)
    first = sorted(Path(image_folder).rglob("*.png"))[0]
    with Image.open(first) as im:
        ours = trained.predict([{"image": im.copy()}])
    assert ours[0]["class"] == rows[0]["class"]
    assert ours[0]["score"] == pytest.approx(rows[0]["score"], abs=1e-6)
