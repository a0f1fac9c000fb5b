"""Shared fixtures: a tiny randomly initialised BERT (saved to a local directory, so loading by
path is exercised) and small labelled files."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

WORDS = {
    "animal": "dog cat horse cow sheep lion tiger wolf bear fox",
    "food": "bread cheese apple rice soup pasta butter honey salad cake",
    "colour": "red blue green yellow purple orange pink brown grey black",
    "music": "guitar piano drum violin song melody rhythm chord flute harp",
    "sport": "football tennis golf rugby hockey boxing rowing skiing cycling swimming",
    "weather": "rain snow wind storm cloud sunshine fog hail thunder frost",
}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer BERT of width 32 with MiniLM's tokenizer, saved as a local model directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from retain.backbones import resolve

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(path)
    return str(path)


def make_rows(per_class: int = 10, classes: list[str] | None = None) -> list[dict]:
    rows = []
    for label in classes or list(WORDS):
        words = WORDS[label].split()
        for i in range(per_class):
            rows.append({"text": f"the {words[i % len(words)]} and the {words[(3 * i + 1) % 10]}",
                         "label": label})
    return rows


@pytest.fixture
def jsonl_file(tmp_path) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in make_rows()) + "\n")
    return str(path)


@pytest.fixture
def tiny_config(tiny_bert, jsonl_file, tmp_path):
    """A RunConfig factory: 3 tasks of 2 classes from the JSONL file, on the tiny BERT."""
    from retain import RunConfig

    def make(**kw) -> RunConfig:
        base = dict(method="seq-lora", data=jsonl_file, benchmark=None, profile="smoke",
                    classes_per_task=2, backbone=tiny_bert, epochs=2, batch_size=8,
                    retention=False, out=str(tmp_path / "run"))
        base.update(kw)
        base.setdefault("head_options", small_head(base["method"], base.get("head")))
        return RunConfig(**base)

    return make


def torchrun(args: list[str], out, processes: int):
    """``python -m retain.cli ARGS --out OUT`` under torchrun with ``processes`` processes (a
    gloo group that accelerate's Accelerator joins: MULTI_CPU); the finished process."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "-m", "retain.cli", *args, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def small_head(method: str, head: str | None = None) -> dict:
    """Head options that keep tests fast: a 64-wide projection where the head is analytic (its
    default, 5000, costs seconds of float64 solves per task whatever the data)."""
    from retain.methods import get_method_class

    default = get_method_class(method).info.default_head
    return {"projection": 64} if (head or default) == "analytic" else {}


def reloaded_scores(out, results: dict) -> list[float]:
    """Each task's accuracy when the run in ``out`` is reloaded (``retain.load``) and scores
    every task's kept test split through ``Trained.evaluate``: a run whose saved model, head
    or input path differs from what it trained gives other figures than ``results``' last
    row (the caller compares them)."""
    from retain import load
    from retain.run_folder import read_test

    trained = load(out)
    column = trained.kind.input_column(trained.backbone.modality)
    rows = [{column: item[column], "label": trained.class_names[int(label)]}
            for i in range(len(results["matrix"]))
            for item, label in zip(read_test(Path(out), i).items, read_test(Path(out), i).labels,
                                   strict=True)]
    return [t["accuracy"] for t in trained.evaluate(rows)["per_task"]]


def crash_on_task(monkeypatch, cls, index: int):
    """Make ``cls.end_task`` raise KeyboardInterrupt on task ``index`` (a crash after the task
    trained, before its checkpoint); returns a function that restores the original."""
    original = cls.end_task

    def end_task(self, task, batches):
        if task.index == index:
            raise KeyboardInterrupt
        return original(self, task, batches)

    monkeypatch.setattr(cls, "end_task", end_task)
    return lambda: monkeypatch.setattr(cls, "end_task", original)


def check_exact_resume(tiny_config, monkeypatch, tmp_path, cls, **kw) -> None:
    """Crash ``cls`` after task 2 trained, resume, and compare with an uninterrupted run:
    equal accuracy matrices and equal last losses of every task."""
    from retain.engine import train_stream

    full = train_stream(tiny_config(out=str(tmp_path / "full"), **kw), progress=False)[0]
    restore = crash_on_task(monkeypatch, cls, 2)
    cfg = tiny_config(out=str(tmp_path / "crashed"), **kw)
    with pytest.raises(KeyboardInterrupt):
        train_stream(cfg, progress=False)
    restore()
    resumed = train_stream(cfg, resume=True, progress=False)[0]
    assert resumed["matrix"] == full["matrix"]
    assert [p["last_loss"] for p in resumed["per_task"]] == [p["last_loss"] for p in
                                                            full["per_task"]]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> str:
    """Four classes of 10 small PNGs each (a colour and a stripe per class), in class folders."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    for c, name in enumerate(["circle", "cross", "square", "stripe"]):
        (root / name).mkdir()
        for i in range(10):
            img = rng.randint(0, 60, (20, 20, 3)).astype(np.uint8)
            img[:, 5 * c:5 * c + 5, c % 3] = 255
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
    return str(root)


@pytest.fixture(scope="session")
def lm_file(tmp_path_factory) -> str:
    """A JSON Lines file with `text` and `task` columns: two tasks of 40 sentences."""
    path = tmp_path_factory.mktemp("lm") / "texts.jsonl"
    rows = []
    for task, label in (("animals", "animal"), ("food", "food")):
        words = WORDS[label].split()
        rows += [{"text": f"the {words[i % 10]} is near the {words[(7 * i + 3) % 10]} today.",
                  "task": task} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)
