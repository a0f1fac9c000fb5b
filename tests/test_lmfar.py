"""lmfar: the stream definition (task order, caps, encodings, cleaning) and the English probes
of a language model's retention."""

from __future__ import annotations

import pytest
import torch

from retain.config import RunConfig
from retain.data import lmfar
from retain.errors import RetainError


def _fortune_folder(root, per_language: int = 120) -> str:
    """de/, es/, cs/ with two files each: fortunes separated by '%' lines, one Czech file in
    Latin-2 (not UTF-8), a short fortune and a coloured one."""
    words = {"de": "Der Hund und die Katze gehen heute zusammen in den großen Garten",
             "es": "El perro y el gato van hoy juntos al gran jardín de la casa",
             "cs": "Pes a kočka jdou dnes spolu do velké zahrady za domem"}
    for code, sentence in words.items():
        folder = root / code
        folder.mkdir(parents=True)
        rows = [f"{sentence} ({i}).\n\t\t-- Autor {i}" for i in range(per_language)]
        half = len(rows) // 2
        encoding = "iso-8859-2" if code == "cs" else "utf-8"
        (folder / "a").write_bytes("\n%\n".join(rows[:half] + ["kurz"]).encode("utf-8"))
        (folder / "b").write_bytes("\n%\n".join(rows[half:]).encode(encoding))
        (folder / "a.dat").write_bytes(b"\x00\x01")  # an index: not read
    return str(root)


@pytest.fixture
def fortunes_dir(tmp_path, monkeypatch):
    root = _fortune_folder(tmp_path / "fortunes")
    monkeypatch.setenv("RETAIN_FORTUNES", root)
    lmfar._language.cache_clear()
    yield root
    lmfar._language.cache_clear()


def test_parse_fortunes_cleans_and_falls_back_to_the_legacy_encoding():
    raw = (b"Zweite Zeile\n%\nEin \x1b[1mfetter\x1b[0m  Satz,\n\tder lang genug ist, um zu "
           b"bleiben.\n%\nkurz\n%\n")
    fortunes, fallback = lmfar.parse_fortunes(raw, "latin-1")
    assert fortunes == ["Ein fetter Satz, der lang genug ist, um zu bleiben."]
    assert fallback == 0
    czech = "Žluťoučký kůň úpěl ďábelské ódy, jak se to dělá.".encode("iso-8859-2")
    fortunes, fallback = lmfar.parse_fortunes(czech, "iso-8859-2")
    assert fortunes == ["Žluťoučký kůň úpěl ďábelské ódy, jak se to dělá."] and fallback == 1


def test_the_stream_is_german_spanish_czech_with_lm3_caps(fortunes_dir):
    from retain.backbones import load_backbone

    plan = RunConfig(benchmark="lmfar", profile="smoke", out="unused").plan()
    cfg = plan.config
    assert cfg.kind == "lm" and cfg.backbone == "tiny-llama"
    stream = plan.build_stream(load_backbone(cfg.backbone))
    assert [t.name for t in stream.tasks] == ["german", "spanish", "czech"]
    for task in stream.tasks:
        assert len(task.train) == 16 and len(task.test) == 8  # smoke: as lm3
        assert {len(item["input_ids"]) for item in task.train.items} == {64}
    assert lmfar.fallbacks("czech") == {"b": 60} and lmfar.fallbacks("german") == {}
    assert all("kurz" not in f for f in lmfar.fortunes("german"))  # under 40 characters
    assert lmfar.fortunes("czech")[-1].startswith("Pes a kočka")  # decoded, not mojibake


def test_lmfar_quick_is_a_shorter_budget_and_language_models_have_their_own_rate():
    far = RunConfig(benchmark="lmfar", profile="quick", method="seq-ft", out="x").resolved()
    lm3 = RunConfig(benchmark="lm3", profile="quick", method="seq-ft", out="x").resolved()
    text = RunConfig(benchmark="wordnet45", profile="quick", method="seq-ft", out="x").resolved()
    assert (far.steps, lm3.steps, far.batch_size) == (30, 60, 8)
    assert (far.lr, lm3.lr, text.lr) == (1e-4, 1e-4, 2e-5)  # seq-ft's per-kind default
    assert RunConfig(benchmark="lmfar", profile="quick", method="seq-ft", lr=3e-5,
                     out="x").resolved().lr == 3e-5  # the command line wins
    assert RunConfig(benchmark="lmfar", profile="smoke", out="x").resolved().steps == 4
    grow = {b: RunConfig(benchmark=b, method="grow", out="x").resolved().lr
            for b in ("lmfar", "wordnet45")}
    assert grow == {"lmfar": 1e-4, "wordnet45": 5e-5}
    plate = {b: RunConfig(benchmark=b, method="plate", out="x").resolved() for b in
             ("lmfar", "wordnet45")}  # the frontier's choice on language models only
    assert (plate["lmfar"].lr, plate["lmfar"].method_options["selection"]) == (3e-3, "official")
    assert (plate["wordnet45"].lr, plate["wordnet45"].method_options["selection"]) == (
        5e-4, "exact")


def test_missing_packages_are_named_in_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("RETAIN_FORTUNES", raising=False)
    monkeypatch.setattr(lmfar, "SYSTEM", tmp_path / "none")
    monkeypatch.setattr(lmfar, "CACHE", tmp_path / "none")
    with pytest.raises(RetainError, match="fortunes-de, fortunes-es, fortunes-cs") as e:
        lmfar.fortunes_root()
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not (lmfar.SYSTEM / "cs").is_dir(), reason="fortunes-de/es/cs not installed")
def test_the_installed_packages(monkeypatch):
    monkeypatch.delenv("RETAIN_FORTUNES", raising=False)
    lmfar._language.cache_clear()
    counts = {n: len(lmfar.fortunes(n)) for n in lmfar.LANGUAGES}
    assert all(c > 5000 for c in counts.values()), counts
    assert all(len(f) >= 40 and "\x1b" not in f and "\n" not in f
               for n in lmfar.LANGUAGES for f in lmfar.fortunes(n))


def test_probes_of_an_identical_model_give_ratio_one_and_no_kl():
    from retain.backbones import load_backbone
    from retain.retention import lm_retention

    b = load_backbone("tiny-llama")
    b.model.eval()
    probes = {"shakespeare": torch.randint(0, 1000, (3, 16)),
              "english_news": torch.randint(0, 1000, (2, 12))}
    out = lm_retention(b.token_logits, b.token_logits, probes)
    assert set(out) == {"shakespeare_perplexity", "kl_from_untouched", "english_news_perplexity",
                        "english_news_kl"}
    for key in ("shakespeare_perplexity", "english_news_perplexity"):
        assert out[key]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert abs(out["kl_from_untouched"]["score"]) < 1e-6
    assert abs(out["english_news_kl"]["score"]) < 1e-6
    assert out["english_news_perplexity"]["sequences"] == 2
    assert out["english_news_perplexity"]["tokens_each"] == 12
    other = load_backbone("tiny-llama")  # the same weights, then moved
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = lm_retention(b.token_logits, other.token_logits, probes)
    assert moved["english_news_kl"]["score"] > 1e-4
    assert moved["english_news_perplexity"]["ratio"] != pytest.approx(1.0, abs=1e-4)


def test_lmfar_is_scored_on_lm3_test_splits_too(fortunes_dir):
    from transformers import AutoTokenizer

    from retain.backbones import resolve
    from retain.retention import lm_probes

    tok = AutoTokenizer.from_pretrained(resolve("smollm2"))
    far = lm_probes(tok, RunConfig(benchmark="lmfar", retention_limit=60))
    assert set(far) == {"shakespeare", "english_definitions", "english_news",
                        "english_encyclopedia"}
    assert far["shakespeare"].shape == (4, 128) and far["english_news"].shape == (2, 64)
    near = lm_probes(tok, RunConfig(benchmark="lm3", retention_limit=None))
    assert set(near) == {"shakespeare"}  # lm3 trains on that English


def test_an_lmfar_smoke_run_reports_every_english_probe(fortunes_dir, tmp_path):
    from retain import run
    from retain.summary import summary_row

    res = run(RunConfig(method="seq-lora", benchmark="lmfar", profile="smoke",
                        out=str(tmp_path / "far")), progress=False)
    ret = res["retention"]
    for d in ("definitions", "news", "encyclopedia"):
        assert ret[f"english_{d}_perplexity"]["ratio"] > 0
        assert ret[f"english_{d}_perplexity"]["sequences"] == 2  # smoke: limit 60
    row = summary_row(res)
    assert row["retention_worst_perplexity"] == max(
        v["ratio"] for k, v in ret.items() if k.endswith("_perplexity"))


def _curve_config(lm_file, out, **kw):
    return RunConfig(**{**dict(method="seq-lora", data=lm_file, benchmark=None, kind="lm",
                               profile="smoke", steps=4, probe_every=2, retention=False,
                               out=str(out)), **kw})


def test_curves_are_recorded_at_the_right_steps_and_change_nothing(lm_file, tmp_path):
    from retain.engine import train_stream

    res, _ = train_stream(_curve_config(lm_file, tmp_path / "a"), progress=False)
    points = res["curves"]["points"]
    assert [(p["task"], p["step"], p["task_step"]) for p in points] == [
        (1, 0, 0), (1, 2, 2), (1, 4, 4), (2, 6, 2), (2, 8, 4)]
    assert set(points[0]["english_ratio"]) == {"shakespeare"}
    assert points[0]["english_ratio"]["shakespeare"] == pytest.approx(1.0, abs=1e-5)
    assert points[-1]["task_perplexity"] > 0 and res["curves"]["every"] == 2
    plain, _ = train_stream(_curve_config(lm_file, tmp_path / "b", probe_every=0),
                            progress=False)
    assert plain["matrix"] == res["matrix"] and "curves" not in plain
    # every 3 steps of 4: step 3, and the task's last step
    odd, _ = train_stream(_curve_config(lm_file, tmp_path / "c", probe_every=3), progress=False)
    assert [p["task_step"] for p in odd["curves"]["points"]] == [0, 3, 4, 3, 4]


def test_a_resumed_run_has_the_same_curves(lm_file, tmp_path, monkeypatch):
    from retain.engine import train_stream
    from retain.methods.baselines import SeqLoRA
    from tests.conftest import crash_on_task

    full, _ = train_stream(_curve_config(lm_file, tmp_path / "full"), progress=False)
    cfg = _curve_config(lm_file, tmp_path / "crashed")
    restore = crash_on_task(monkeypatch, SeqLoRA, 1)
    with pytest.raises(KeyboardInterrupt):
        train_stream(cfg, progress=False)
    restore()
    resumed, _ = train_stream(cfg, resume=True, progress=False)
    assert resumed["curves"]["points"] == full["curves"]["points"]


def test_probe_every_is_refused_for_classification():
    with pytest.raises(RetainError, match="--probe-every"):
        RunConfig(probe_every=5).check()
