"""Integration tests on the real all-MiniLM-L6-v2 from its offline package."""

import pytest

from retain import RunConfig, run
from retain.backbones import load_backbone
from retain.retention import probe

pytestmark = pytest.mark.minilm


@pytest.fixture(scope="module")
def minilm():
    return load_backbone("minilm")


def test_minilm_is_a_mean_pooled_sentence_encoder(minilm):
    assert minilm.pooling == "mean" and minilm.hidden_size == 384
    a, b, c = minilm.embed(["A man is playing a guitar.", "Someone plays an instrument.",
                            "The stock market fell sharply today."])
    assert float(a @ b) > float(a @ c) + 0.2


def test_untouched_retention_scores_match_the_published_figures(minilm):
    scores = probe(minilm.embed).scores
    assert scores["wordsim353"] == pytest.approx(0.73, abs=0.01)
    assert scores["simlex999"] == pytest.approx(0.45, abs=0.01)
    assert scores["lee"] == pytest.approx(0.66, abs=0.02)


def test_frozen_ncm_and_seq_lora_on_wordnet45_smoke(tmp_path):
    ncm = run(RunConfig(method="frozen-ncm", profile="smoke", out=str(tmp_path / "ncm")),
              progress=False)
    assert ncm["metrics"]["final_accuracy"] > 0.5
    assert ncm["retention"]["embedding_drift"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    lora = run(RunConfig(method="seq-lora", profile="smoke", out=str(tmp_path / "lora")),
               progress=False)
    assert lora["retention"]["embedding_drift"]["ratio"] < 1.0
    assert lora["cost"]["trainable_parameters"] > 0


def test_inflora_invariant_on_minilm(tmp_path, monkeypatch):
    from retain.engine import train_stream
    from tests.test_inflora import _check_invariant

    ratios = []
    _check_invariant(monkeypatch, ratios)
    train_stream(RunConfig(method="inflora", profile="smoke", retention=False, head="task-heads",
                           out=str(tmp_path / "inf")), progress=False)
    assert len(ratios) == 2 * 6 * 2  # tasks 2 and 3, six layers, key and value
    assert max(ratios) < 1e-4  # (each branch did train: _check_invariant asserts it)


def test_plate_invariants_on_every_minilm_layer(minilm, tau=0.9):
    from peft import get_peft_model

    from retain.methods.plate import PlateConfig
    from tests.test_plate import check_invariants

    model = get_peft_model(minilm.model, PlateConfig(r=32, tau=tau, target_modules="all-linear"))
    try:
        assert check_invariants(model, tau) == 6 * 6
    finally:
        minilm.model = model.unload()


def test_plate_drift_shrinks_as_tau_rises_with_no_old_data(minilm):
    """Drift falls strictly as tau rises, in the mean over three seeds (data order and head),
    and the lowest tau drifts more than the highest for every seed alone."""
    from statistics import mean

    from retain.methods.plate import PlateConfig
    from retain.methods.plate.drift import drifts_after_training
    from retain.retention import neutral_sentences

    task = RunConfig(method="plate", profile="smoke").plan().build_stream().tasks[0]
    texts, labels = [it["text"] for it in task.train.items], [int(y) for y in task.train.labels]
    taus = (0.5, 0.8, 0.95)
    drifts = {tau: drifts_after_training(
        minilm, PlateConfig(r=32, tau=tau, target_modules="all-linear"), texts, labels,
        list(neutral_sentences()), steps=10, seeds=(0, 1, 2)) for tau in taus}
    means = [mean(drifts[tau]) for tau in taus]
    assert means[0] > means[1] > means[2] > 0.0, drifts
    assert all(low > high for low, high in zip(drifts[0.5], drifts[0.95], strict=True)), drifts
