"""Frontiers of learning against forgetting: the envelope and the figures read off it on
hand-made points, a language-model sweep over the learning rate end to end, held-out
sequences, per-kind defaults and the top-N freeze baseline."""

from __future__ import annotations

import json
import math

import pytest
import torch

from retain.config import RunConfig
from retain.errors import RetainError
from retain.frontier import Point, best_within, envelope, table, value_at


def _points(*xy: tuple[float, float]) -> list[Point]:
    return [Point(x, y) for x, y in xy]


def test_the_envelope_keeps_only_points_nothing_beats():
    pts = _points((100, 1.0), (50, 1.02), (40, 1.10), (45, 1.20), (20, 1.5), (30, 1.05))
    front = envelope(pts)
    assert [(p.x, p.y) for p in front] == [(20, 1.5), (30, 1.05), (50, 1.02), (100, 1.0)]
    # a point off the envelope (beaten on both axes by (30, 1.05)) changes nothing
    again = envelope(pts + _points((35, 1.3)))
    assert again == front
    # one that beats a vertex replaces it
    assert (40, 1.01) in [(p.x, p.y) for p in envelope(pts + _points((40, 1.01)))]


def test_values_are_interpolated_in_log_perplexity_and_bounded_bests():
    front = envelope(_points((20, 1.5), (80, 1.1), (100, 1.0)))
    assert value_at(front, 20) == pytest.approx(1.5)
    assert value_at(front, 40) == pytest.approx(1.3)  # halfway in log between 20 and 80
    assert value_at(front, 10) is None  # never learnt that much
    assert value_at(front, 500) == pytest.approx(1.0)  # right of the last point: its value
    # the constrained best: the lowest perplexity of a measured point within the bound
    pts = _points((20, 1.5), (80, 1.1), (100, 1.0), (90, 1.2))
    assert best_within(pts, 1.3) == 80 and best_within(pts, 1.6) == 20
    assert best_within(pts, 0.99) is None


def _run(method: str, lr: float, points: list[tuple[int, float, float, float]],
         options: dict | None = None, seed: int = 0) -> dict:
    """A results.json with curves: (step, test ppl, held-out ppl, worst ratio) per point."""
    from retain.frontier import _default_options

    opts = {**_default_options(method, "lm"), **(options or {})}
    return {"method": method, "config": {"method": method, "kind": "lm", "lr": lr,
                                         "seed": seed, "method_options": opts},
            "cost": {"trainable_parameters": 10, "stored_parameters": 20,
                     "median_step_seconds": 0.5},
            "curves": {"points": [{"task": 1, "step": s, "task_step": s, "task_perplexity": x,
                                   "heldout_perplexity": h,
                                   "english_ratio": {"a": y, "b": 1.0},
                                   "english_kl": {"a": 2 * (y - 1), "b": 0.0}}
                                  for s, x, h, y in points]}}


def test_the_table_matches_points_to_full_fine_tunings_best_and_chooses_on_held_out():
    ft = [_run("seq-ft", 1e-4, [(0, 100, 100, 1.0), (10, 40, 44, 1.2), (20, 20, 22, 1.4)])]
    lora_slow = _run("seq-lora", 1e-4, [(0, 100, 100, 1.0), (10, 60, 66, 1.01),
                                        (20, 30, 33, 1.05)])
    lora_fast = _run("seq-lora", 1e-3, [(0, 100, 100, 1.0), (10, 25, 24, 1.3),
                                        (20, 22, 21, 1.6)])
    t = table(ft + [lora_slow, lora_fast])
    assert t["reference_best_perplexity"] == 20 and t["reference_best_heldout_perplexity"] == 22
    rows = {r["configuration"]: r for r in t["rows"]}
    lora = rows["seq-lora"]
    assert lora["rates"] == [1e-4, 1e-3] and lora["best_perplexity"] == 22
    # 1.25x of 20 = 25: LoRA's envelope passes through (25, 1.3) from lr 1e-3
    assert lora["ratio_at_1.25x"] == pytest.approx(1.3)
    assert lora["kl_at_1.25x"] == pytest.approx(0.3)  # mean of 2 * 0.3 and 0
    # 1.5x = 30: (30, 1.05) from lr 1e-4
    assert lora["ratio_at_1.5x"] == pytest.approx(1.05)
    assert lora["best_within_1.05"] == 30 and lora["best_within_1.02"] == 60
    assert rows["seq-ft"]["ratio_at_1.1x"] == pytest.approx(
        1.4 + (math.log(22) - math.log(20)) / (math.log(40) - math.log(20)) * (1.2 - 1.4))
    # chosen on held-out: at 1.25 x 22 = 27.5, lr 1e-4's held-out envelope never gets there
    # (its best is 33), lr 1e-3's does: it is chosen although its test ratios are worse
    assert lora["chosen_lr"] == 1e-3
    assert lora["equal_step"] == {"step": 20, "perplexity": 22, "ratio": 1.6,
                                  "kl": pytest.approx(0.6)}
    assert lora["trainable_parameters"] == 10
    # another configuration: its own row; an option that is the kind's default: the same row
    named = _run("seq-lora", 1e-3, [(0, 100, 100, 1.0), (10, 50, 50, 1.0)], {"rank": 32})
    rows = {r["configuration"] for r in table(ft + [lora_slow, named])["rows"]}
    assert rows == {"seq-ft", "seq-lora", "seq-lora rank=32"}
    # runs added later, without the reference's runs: matched to the bests given, the same row
    alone = table([lora_slow, lora_fast], given=(20, 22))
    assert alone["rows"] == [rows_ for rows_ in t["rows"] if rows_["configuration"] == "seq-lora"]
    assert table([lora_slow, lora_fast])["rows"][0]["ratio_at_1.25x"] is None  # nothing given


def test_language_models_resolve_their_own_method_defaults(lm_file, tiny_config):
    lm = RunConfig(method="seq-lora", data=lm_file, benchmark=None, kind="lm",
                   profile="smoke").resolved()
    cls = tiny_config(method="seq-lora").resolved()
    assert lm.method_options["target_modules"] == ["all-linear"] and lm.lr == 1e-3
    assert cls.method_options["target_modules"] == ["query", "value"] and cls.lr == 5e-4
    given = RunConfig(method="seq-lora", data=lm_file, benchmark=None, kind="lm",
                      profile="smoke", method_options={"target_modules": "q_proj"}).resolved()
    assert given.method_options["target_modules"] == ["q_proj"]  # the user's option wins


def test_the_top_n_freeze_trains_exactly_the_last_blocks(lm_file, tmp_path):
    from retain.backbones import load_backbone, transformer_blocks

    plan = RunConfig(method="seq-ft", data=lm_file, benchmark=None, kind="lm", profile="smoke",
                    method_options={"top_blocks": 1}, out=str(tmp_path / "t")).plan()
    cfg = plan.config
    backbone = load_backbone(cfg.backbone, cfg.pooling)
    method = plan.build_method()
    method.setup(backbone, plan.build_stream(backbone))
    blocks = transformer_blocks(method.model)
    top = {id(p) for p in blocks[-1].parameters()}
    trains = {id(p) for p in method.model.parameters() if p.requires_grad}
    assert trains == top and len(blocks) == 2
    with pytest.raises(RetainError, match="top_blocks=3: the backbone has 2 blocks"):
        cfg3 = RunConfig(method="seq-ft", data=lm_file, benchmark=None, kind="lm",
                         profile="smoke", method_options={"top_blocks": 3}).plan()
        cfg3.build_method().setup(backbone, cfg3.build_stream(backbone))


def test_held_out_sequences_are_never_trained_on_and_are_scored(lm_file, tmp_path):
    from retain.backbones import load_backbone
    from retain.engine import train_stream

    cfg = RunConfig(method="seq-lora", data=lm_file, benchmark=None, kind="lm", profile="smoke",
                    steps=2, probe_every=1, holdout=3, probe_english_sequences=2,
                    probe_task_sequences=3, retention=False, out=str(tmp_path / "h"))
    llama = load_backbone("tiny-llama")
    plain = RunConfig(**{**cfg.__dict__, "holdout": 0}).plan().build_stream(llama)
    held = cfg.plan().build_stream(llama)
    for a, b in zip(plain.tasks, held.tasks, strict=True):
        assert a.train.items[:-3] == b.train.items and a.train.items[-3:] == b.heldout.items
    res, _ = train_stream(cfg, progress=False)
    c = res["curves"]
    assert c["task_sequences"] == 3 and set(c["probe_sequences"].values()) == {2}
    first = c["points"][0]
    assert first["heldout_perplexity"] > 0 and first["english_kl"]["shakespeare"] == \
        pytest.approx(0.0, abs=1e-6)
    assert all(p["english_kl"]["shakespeare"] >= -1e-7 for p in c["points"])
    with pytest.raises(RetainError, match="--holdout 500 leaves nothing"):
        RunConfig(**{**cfg.__dict__, "holdout": 500}).plan().build_stream(llama)
    with pytest.raises(RetainError, match="for a classification stream give --validation"):
        RunConfig(holdout=4).check()


def test_token_kl_is_the_definition():
    from retain.kinds import token_kl

    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    pa, pb = a[:, :-1].softmax(-1), b[:, :-1].softmax(-1)
    expected = (pa * (pa.log() - pb.log())).sum()
    assert float(token_kl(a, b)) == pytest.approx(float(expected), rel=1e-5)
    assert float(token_kl(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_a_language_model_sweep_over_the_rate_and_an_option(lm_file, tmp_path, capsys):
    from retain.cli import main

    out = tmp_path / "sweep"
    args = ["sweep", "--method", "seq-ft", "--data", str(lm_file), "--kind", "lm", "--profile",
            "smoke", "--steps", "2", "--probe-every", "1", "--holdout", "2",
            "--no-retention", "--inference-rounds", "2", "--grid", "lr=1e-3,1e-2",
            "--grid", "top_blocks=0,1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    frontier = json.loads((out / "frontier.json").read_text())
    assert [p["label"] for p in frontier["points"]] == [
        "lr=1e-3,top_blocks=0", "lr=1e-3,top_blocks=1", "lr=1e-2,top_blocks=0",
        "lr=1e-2,top_blocks=1"]
    first = json.loads((out / "lr=1e-2,top_blocks=1" / "results.json").read_text())
    assert first["config"]["lr"] == 1e-2 and first["config"]["method_options"] == {
        "top_blocks": 1}
    tables = frontier["envelopes"]
    assert [t["task"] for t in tables] == [1, 2]
    assert {r["configuration"] for r in tables[0]["rows"]} == {"seq-ft", "seq-ft top_blocks=1"}
    assert (out / "frontier.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "retention_worst_perplexity" not in printed or "n/a" in printed
    assert "envelopes of learning against forgetting" in printed
    # finished points are read, not run again
    mtime = (out / "lr=1e-3,top_blocks=0" / "results.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "lr=1e-3,top_blocks=0" / "results.json").stat().st_mtime_ns == mtime
    # the same runs through `retain frontier`
    assert main(["frontier", str(out), "--out", str(tmp_path / "f")]) == 0
    again = json.loads((tmp_path / "f" / "frontier.json").read_text())

    def figures(found):  # the runs in another order: the same envelopes and figures
        return {(t["task"], r["configuration"]): (r["envelope"], r["ratio_at_1.25x"],
                                                  r["best_within_1.05"], r["chosen_lr"])
                for t in found for r in t["rows"]}
    assert figures(again["envelopes"]) == figures(tables)
    # and through `retain compare --runs`: its report adds the envelopes
    runs = [str(p.parent) for p in sorted(out.glob("*/results.json"))]
    assert main(["compare", "--runs", *runs, "--out", str(tmp_path / "c")]) == 0
    assert "| `seq-ft top_blocks=1` |" in (tmp_path / "c" / "frontier.md").read_text()
    assert (tmp_path / "c" / "frontier.png").is_file()
    report = (tmp_path / "c" / "report.md").read_text()
    assert "seed 0: []" not in report and "a language-model stream" in report


def test_a_grid_may_not_vary_what_names_the_run(tiny_config, tmp_path):
    from retain.sweep import sweep

    with pytest.raises(RetainError, match="--grid method cannot vary"):
        sweep(tiny_config(out=str(tmp_path / "s")), {"method": ["seq-ft"]}, progress=False)
    with pytest.raises(RetainError, match="not a number"):
        sweep(tiny_config(out=str(tmp_path / "s")), {"lr": ["fast"]}, progress=False)


def test_seed_spreads_are_each_seeds_own_table():
    from retain.frontier import markdown, seed_spreads

    runs = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        runs.append(_run("seq-ft", 1e-4, [(0, 100, 100, 1.0), (10, 20, 20, 1.4 + shift)],
                         seed=seed))
        runs.append(_run("seq-lora", 1e-3, [(0, 100, 100, 1.0), (10, 25, 25, 1.2 + shift)],
                         seed=seed))
    spreads = seed_spreads(runs)
    assert spreads["seq-lora"]["ratio_at_1.25x"] == pytest.approx([1.2, 1.3])
    assert spreads["seq-ft"]["best_perplexity"] == [20, 20]
    text = markdown(table([r for r in runs if r["config"]["seed"] == 0]), spreads)
    assert "1.200 (1.200-1.300)" in text


def test_seed_spreads_pool_only_the_rates_every_seed_ran():
    from retain.frontier import seed_spreads

    runs = [_run("seq-ft", 1e-4, [(0, 100, 100, 1.0), (10, 20, 20, 1.4)], seed=0),
            _run("seq-ft", 1e-4, [(0, 100, 100, 1.0), (10, 22, 22, 1.3)], seed=1),
            _run("seq-ft", 3e-5, [(0, 100, 100, 1.0), (10, 30, 30, 1.01)], seed=0)]
    # the 3e-5 run has one seed: left out, so seed 0's constrained best is not 30 but 100
    assert seed_spreads(runs)["seq-ft"]["best_within_1.02"] == [100, 100]
    from retain.frontier import spread_markdown

    assert "| `seq-ft` |" in spread_markdown(seed_spreads(runs))
