"""Half precision end to end: every method on every task kind under ``--mixed-precision bf16``
(fp16 where a GPU is present): training, retention, inference cost, ``results.json``,
``retain.load(...).predict`` and ``export``; and a run whose tasks all finished is always
finished by ``resume``, evaluation-only options changed or not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import retain
from retain import RunConfig, engine
from retain.catalogue import METHODS
from retain.errors import RetainError
from tests.conftest import small_head
from tests.test_use import documented_head

CUDA = torch.cuda.is_available()
PRECISIONS = ["bf16", pytest.param("fp16", marks=pytest.mark.skipif(
    not CUDA, reason="fp16 needs a GPU (the engine refuses it on the CPU)"))]
FAST = dict(steps=1, batch_size=8, retention=True, retention_limit=15, cap=5)  # 4 train, 1 test
TEXTS = ["the dog and the cat", "red rain", "the piano and the song"]


@pytest.fixture(autouse=True)
def _small_measurements(monkeypatch):
    """Every measurement runs, under the run's precision, on less: the inference cost over two
    timed rounds, retention on 8 neutral sentences and 6 Lee documents."""
    from retain import inference, retention

    timer, lee, neutral = inference.paired_seconds, retention.lee, retention.neutral_sentences
    monkeypatch.setattr(inference, "paired_seconds",
                        lambda forwards, batch, acc, **kw: timer(forwards, batch, acc,
                                                                 rounds=(2, 2), warmup=0))
    monkeypatch.setattr(retention, "lee", lambda: (lee()[0][:6], lee()[1][:6, :6]))
    monkeypatch.setattr(retention, "neutral_sentences", lambda: neutral()[:8])


def _spy_retention(monkeypatch) -> list[tuple[bool, torch.dtype]]:
    """Record whether retention after the stream runs under autocast, and in which dtype."""
    seen, original = [], engine.retention_after
    device = "cuda" if CUDA else "cpu"

    def spy(*args, **kw):
        seen.append((torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)))
        return original(*args, **kw)

    monkeypatch.setattr(engine, "retention_after", spy)
    return seen


def _check_run(res: dict, out: str, precision: str, kind: str) -> None:
    """results.json written, the precision recorded, every figure finite, inference timed."""
    saved = json.loads((Path(out) / "results.json").read_text())
    assert saved["matrix"] == res["matrix"] and saved["config"]["mixed_precision"] == precision
    assert all(math.isfinite(v) for row in res["matrix"] for v in row)
    assert res["cost"]["inference_ratio"] is not None, "inference cost not measured"
    if kind == "image":
        assert res["retention"] is None
        return
    ratios = [r["ratio"] for r in res["retention"].values() if r["ratio"] is not None]
    assert ratios and all(math.isfinite(r) for r in ratios)


def _exported_head_is_float32(dest: Path) -> None:
    info = json.loads((dest / "retain.json").read_text())
    head = load_file(str(dest / "head.safetensors"))
    assert info["head"]["dtype"] == "float32"
    assert {t.dtype for k, t in head.items() if k != "row_class"} == {torch.float32}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_text_classification_end_to_end(method, precision, tiny_config, tmp_path,
                                        monkeypatch):
    seen = _spy_retention(monkeypatch)
    head = "growing" if method == "joint" else None
    cfg = tiny_config(method=method, head=head, mixed_precision=precision,
                      classes_per_task=3, **FAST)
    res = retain.run(cfg, progress=False)
    _check_run(res, cfg.out, precision, "text")
    assert seen == [(True, {"bf16": torch.bfloat16, "fp16": torch.float16}[precision])]
    trained = retain.load(cfg.out)
    ours = trained.predict(TEXTS)
    assert all(o["class"] in trained.class_names and math.isfinite(o["score"]) for o in ours)
    if method == "ntk-cl":  # refuses to export (its modules do not fold into the weights)
        return
    dest = trained.export(tmp_path / "export")
    theirs = documented_head(dest, TEXTS)
    assert [t["class"] for t in theirs] == [o["class"] for o in ours]
    assert [t["score"] for t in theirs] == pytest.approx([o["score"] for o in ours], rel=1e-4,
                                                         abs=1e-5)
    _exported_head_is_float32(dest)


LM_METHODS = sorted(m for m, info in METHODS.items() if "lm" in info.kinds)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("method", LM_METHODS)
def test_language_modelling_end_to_end(method, precision, lm_file, tmp_path, monkeypatch):
    seen = _spy_retention(monkeypatch)
    out = str(tmp_path / "lm")
    cfg = RunConfig(method=method, data=lm_file, benchmark=None, kind="lm", profile="smoke",
                    max_length=16, mixed_precision=precision, out=out,
                    **{**FAST, "cap": 4, "test_cap": 2})
    res = retain.run(cfg, progress=False)
    _check_run(res, out, precision, "lm")
    assert len(seen) == 1 and seen[0][0]
    assert res["retention"]["shakespeare_perplexity"]["untouched"] > 1
    trained = retain.load(out)
    rows = trained.predict(["the dog is near the cat today. the fox is near the wolf today."])
    assert rows[0]["tokens"] > 1 and math.isfinite(rows[0]["perplexity"])
    dest = trained.export(tmp_path / "export")
    info = json.loads((dest / "retain.json").read_text())
    assert info["model_class"] == "AutoModelForCausalLM" and "head" not in info


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_images_end_to_end(method, precision, image_folder, tmp_path, monkeypatch):
    out = str(tmp_path / "img")
    head = "growing" if method == "joint" else None
    res = retain.run(RunConfig(method=method, data=image_folder, benchmark=None,
                               profile="smoke", classes_per_task=2, head=head,
                               head_options=small_head(method, head),
                               mixed_precision=precision, out=out, **FAST), progress=False)
    _check_run(res, out, precision, "image")
    trained = retain.load(out)
    rows = trained.predict(image_folder)
    assert all(r["class"] in trained.class_names and math.isfinite(r["score"]) for r in rows)
    if method != "ntk-cl":
        _exported_head_is_float32(trained.export(tmp_path / "export"))


@pytest.mark.skipif(CUDA, reason="a GPU is present: fp16 runs there")
def test_fp16_on_the_cpu_is_one_line_error(tiny_config, tiny_bert, jsonl_file, tmp_path,
                                           capsys):
    """Refused before anything is loaded or written: one line, exit status 2."""
    from retain.cli import main

    with pytest.raises(RetainError, match=r"^mixed_precision='fp16' needs a GPU; on the CPU use "
                                          r"bf16 or no$"):
        retain.run(tiny_config(mixed_precision="fp16"), progress=False)
    out = tmp_path / "fp16"
    capsys.readouterr()
    assert main(["run", "--mixed-precision", "fp16", "--data", jsonl_file, "--backbone",
                 tiny_bert, "--profile", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--mixed-precision fp16 needs a GPU" in err
    assert not out.exists()


def test_frozen_backbone_retains_everything_under_bf16(tiny_config):
    """The untouched probe runs under the run's precision, as the adapted one: a method that
    trains nothing reads ratio 1 on every probe whatever the precision."""
    cfg = tiny_config(method="frozen-ncm", mixed_precision="bf16", **FAST)
    res = retain.run(cfg, progress=False)
    for name, r in res["retention"].items():
        assert r["ratio"] == pytest.approx(1.0, abs=1e-6), name


# --- finishing a run whose tasks all finished -------------------------------------------------
def _fail_retention_once(monkeypatch) -> None:
    original = engine.retention_after

    def fail(*args, **kw):
        monkeypatch.setattr(engine, "retention_after", original)
        raise RuntimeError("retention failed")

    monkeypatch.setattr(engine, "retention_after", fail)


@pytest.mark.parametrize("change", [dict(retention=False), dict(retention_limit=10)])
def test_resume_finishes_a_run_whose_retention_failed(change, tiny_config, monkeypatch, capsys):
    """All tasks trained, then retention raised: no results.json. ``resume`` with an
    evaluation-only option changed finishes it (one line says so, the checkpoint takes the new
    value) with the checkpoint's matrix; a training option changed is still refused."""
    cfg = tiny_config(**{**FAST, "retention_limit": 20})
    _fail_retention_once(monkeypatch)
    with pytest.raises(RuntimeError, match="retention failed"):
        retain.run(cfg, progress=False)
    out = Path(cfg.out)
    assert not (out / "results.json").exists()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["tasks_done"] == len(state["stream"]["tasks"])
    with pytest.raises(RetainError, match=r"different config \(.*seed differ\)"):
        retain.run(tiny_config(**{**FAST, "retention_limit": 20, **change}, seed=1),
                   resume=True, progress=False)
    capsys.readouterr()
    res = retain.run(tiny_config(**{**FAST, "retention_limit": 20, **change}), resume=True,
                     progress=False)
    err = capsys.readouterr().err
    name = next(iter(change))
    lines = [ln for ln in err.splitlines() if "evaluation-only options changed" in ln]
    assert len(lines) == 1 and f"({name})" in lines[0]
    assert res["matrix"] == state["record"]["rows"]
    assert json.loads((out / "results.json").read_text())["matrix"] == state["record"]["rows"]
    assert (res["retention"] is None) == (change.get("retention") is False)
    saved = json.loads((out / "checkpoint" / "state.json").read_text())["config"]
    assert saved[name] == change[name] and res["config"][name] == change[name]
    # the same options again: nothing changed, nothing said
    retain.run(tiny_config(**{**FAST, "retention_limit": 20, **change}), resume=True,
               progress=False)
    assert "evaluation-only" not in capsys.readouterr().err


def test_the_evaluation_only_options_are_run_flags():
    from retain.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["run", "--retention-limit", "10",
                                                      "--no-retention"]))
    assert (cfg.retention_limit, cfg.retention) == (10, False)
