"""retain compare and retain report: runs once per method and seed, tables that match the
results files, figures embedded in the HTML, and rebuilding without training."""

import dataclasses
import json
import math
import re

import pytest

from retain.cli import main
from retain.comparison import compare, mean_std, method_names
from retain.errors import RetainError
from retain.kinds import CLASSIFICATION, LM
from retain.reporting import build_report, figure_list, table
from retain.summary import summary_row

FIGURES = figure_list(CLASSIFICATION)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_bert):
    from retain import RunConfig
    from tests.conftest import make_rows

    root = tmp_path_factory.mktemp("compare")
    data = root / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows()) + "\n")
    cfg = RunConfig(data=str(data), benchmark=None, profile="smoke", classes_per_task=2,
                    backbone=tiny_bert, epochs=1, batch_size=8, retention=True,
                    retention_limit=40, out=str(root / "cmp"))
    return cfg, compare(cfg, ["frozen-ncm", "seq-lora"], [0, 1], progress=False)


def test_every_method_and_seed_ran_on_the_same_stream(compared):
    cfg, comparison = compared
    assert list(comparison["methods"]) == ["frozen-ncm", "seq-lora"]
    for name, entry in comparison["methods"].items():
        seeds = [r["config"]["seed"] for r in entry["runs"]]
        assert seeds == [0, 1]
        for seed, results in zip((0, 1), entry["runs"], strict=True):  # one order per seed
            stream = dataclasses.replace(cfg, method=name, seed=seed).plan().build_stream()
            assert results["class_order"] == stream.class_order
            assert comparison["class_orders"][str(seed)] == stream.class_order
        saved = json.loads((cfg_dir(cfg) / "runs" / name / "seed1" / "results.json").read_text())
        assert saved["matrix"] == entry["runs"][1]["matrix"]


def cfg_dir(cfg):
    from pathlib import Path

    return Path(cfg.out)


def test_table_numbers_come_from_the_results_files(compared):
    cfg, _ = compared
    comparison = json.loads((cfg_dir(cfg) / "comparison.json").read_text())
    header, rows = table(comparison)
    col = header.index("final accuracy")
    for cells in rows:
        name = cells[0][0]
        finals = [json.loads((cfg_dir(cfg) / "runs" / name / f"seed{s}" / "results.json")
                             .read_text())["metrics"]["final_accuracy"] for s in (0, 1)]
        mean = sum(finals) / 2
        std = abs(finals[0] - finals[1]) / math.sqrt(2)
        assert cells[col][0] == f"{mean:.3f} ± {std:.3f}"
    # the markdown table holds the same cells, the best final accuracy in bold
    md = (cfg_dir(cfg) / "report.md").read_text()
    best = max(rows, key=lambda c: float(c[col][0].split()[0]))
    assert f"**{best[col][0]}**" in md
    stored = header.index("stored parameters")
    ncm = next(c for c in rows if c[0][0] == "frozen-ncm")
    assert ncm[stored][1]  # fewest stored parameters: marked best (lower is better)
    walls = [json.loads(f.read_text())["cost"]["wall_seconds"]
             for f in (cfg_dir(cfg) / "runs").glob("*/seed*/results.json")]
    assert len(walls) == 4 and f"took {sum(walls) / 60:.1f} minutes of wall time" in md


def test_html_is_self_contained_with_every_figure(compared):
    cfg, comparison = compared
    page = (cfg_dir(cfg) / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(FIGURES) == 5
    for entry in comparison["methods"].values():  # the training-loss figure's data
        run = entry["runs"][0]
        assert len(run["training_log"]["loss"]) == run["cost"]["steps"]
    assert "src='http" not in page and "href=" not in page and "<table>" in page
    for file, title, _ in FIGURES:
        assert (cfg_dir(cfg) / file).read_bytes()[:4] == b"\x89PNG"
        assert title in page


def test_report_rebuilds_from_saved_results_without_training(compared, monkeypatch, capsys):
    from retain import engine

    cfg, comparison = compared
    for file in ["report.md", "report.html"] + [f for f, _, _ in FIGURES]:
        (cfg_dir(cfg) / file).unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("the report trained a model")

    monkeypatch.setattr(engine, "run", no_training)
    assert main(["report", str(cfg_dir(cfg))]) == 0
    assert "report.html" in capsys.readouterr().out
    assert all((cfg_dir(cfg) / f).is_file() for f, _, _ in FIGURES)
    again = compare(cfg, ["frozen-ncm", "seq-lora"], [0, 1], progress=False)  # nothing reruns
    assert again["methods"]["seq-lora"]["mean"] == pytest.approx(
        comparison["methods"]["seq-lora"]["mean"], nan_ok=True)


def test_mean_and_sample_std_over_seeds():
    rows = [{"method": "m", "final_accuracy": 0.5, "forgetting": None},
            {"method": "m", "final_accuracy": 0.7, "forgetting": None}]
    mean, std = mean_std(rows)
    assert mean["final_accuracy"] == pytest.approx(0.6)
    assert std["final_accuracy"] == pytest.approx(math.sqrt(0.02))
    assert math.isnan(mean["forgetting"]) and "method" not in mean


def test_method_names_and_errors(tmp_path):
    lm = method_names("all", "lm")  # the methods that serve a kind, by their registration
    assert {"seq-lora", "inflora", "plate", "share", "grow"} <= set(lm)
    assert not {"frozen-ncm", "ntk-cl", "lora-per-task", "first-session"} & set(lm)
    assert set(lm) < set(method_names("all"))
    assert method_names("seq-lora, plate") == ["seq-lora", "plate"]
    with pytest.raises(RetainError, match="unknown method 'nope'"):
        method_names("seq-lora,nope")
    with pytest.raises(RetainError, match="no comparison.json"):
        build_report(tmp_path)


def test_summary_row_reports_the_lowest_retention_ratio():
    results = {"method": "m", "head": "growing", "metrics": {}, "cost": {},
               "score": {"name": "accuracy", "direction": "higher"}, "retention": {
        "wordsim353": {"ratio": 0.9}, "lee": {"ratio": 0.8}}}
    assert summary_row(results)["retention_min"] == 0.8


def test_a_language_model_comparison_gets_its_report(tmp_path):
    from retain import RunConfig
    from retain.comparison import compare, method_names

    cfg = RunConfig(benchmark="lm3", profile="smoke", retention=True, out=str(tmp_path / "c"))
    assert "frozen-ncm" not in method_names("all", "lm")
    comparison = compare(cfg, ["seq-lora"], [0], progress=False)
    assert comparison["methods"]["seq-lora"]["mean"]["final_perplexity"] > 1
    for name in ("perplexity_matrices.png", "perplexity_curves.png",
                 "perplexity_vs_retention.png", "cost_vs_perplexity.png", "report.md"):
        assert (tmp_path / "c" / name).stat().st_size > 0
    report = (tmp_path / "c" / "report.md").read_text()
    assert "final perplexity" in report and "accuracy" not in report.lower()
    assert "language modelling" in report and "-incremental" not in report
    assert {f for f, _, _ in figure_list(LM)} == {p.name for p in (tmp_path / "c").glob("*.png")}


def fake_run(method: str, ratio: float, spread: list[float]) -> dict:
    return {"method": method, "head": "growing", "scenario": "class", "stream": "s",
            "kind": "classification", "score": {"name": "accuracy", "direction": "higher"},
            "config": {"profile": "smoke", "seed": 0}, "class_order": [0, 1], "metrics": {},
            "cost": {"inference_ratio": ratio, "inference_ratio_spread": spread}}


def inference_cells(*methods) -> dict[str, tuple[str, bool]]:
    """Each method's (text, is best) cell of the inference ratio, from one run each."""
    from retain.comparison import assemble

    header, rows = table(assemble({m: [fake_run(m, r, s)] for m, r, s in methods}, [0]))
    col = header.index("inference time vs untouched (ratio)")
    return {cells[0][0]: cells[col] for cells in rows}


def test_an_inference_ratio_inside_another_spread_is_not_marked_best():
    """Bold only where the best lies outside every other spread and the others outside its
    own; two decimals and the spread in the cell."""
    cells = inference_cells(("frozen-ncm", 0.97, [0.9, 1.1]), ("seq-lora", 1.03, [0.95, 1.2]))
    assert cells == {"frozen-ncm": ("0.97 [0.90-1.10]", False),
                     "seq-lora": ("1.03 [0.95-1.20]", False)}
    for spreads in (([0.99, 1.01], [0.9, 1.3]), ([0.8, 1.3], [1.15, 1.25])):  # either side
        cells = inference_cells(("a", 1.0, spreads[0]), ("b", 1.2, spreads[1]))
        assert not cells["a"][1] and not cells["b"][1]
    cells = inference_cells(("seq-lora", 1.0, [0.9, 1.1]), ("grow", 2.5, [2.3, 2.7]))
    assert cells["seq-lora"] == ("1.00 [0.90-1.10]", True) and not cells["grow"][1]


def run_dirs(cfg, methods=("frozen-ncm", "seq-lora"), seeds=(0, 1)) -> list[str]:
    return [str(cfg_dir(cfg) / "runs" / m / f"seed{s}") for m in methods for s in seeds]


def test_compare_runs_builds_the_report_from_finished_runs(compared, tmp_path, monkeypatch,
                                                           capsys):
    """`retain compare --runs` on the four runs of a comparison: the same comparison and
    table, every report file, and nothing trained."""
    from retain import engine

    cfg, _ = compared

    def no_training(*args, **kwargs):
        raise AssertionError("compare --runs trained a model")

    monkeypatch.setattr(engine, "run", no_training)
    monkeypatch.setattr(engine, "train_stream", no_training)
    out = tmp_path / "again"
    assert main(["compare", "--runs", *run_dirs(cfg), "--out", str(out), "--quiet"]) == 0
    assert "report.html" in capsys.readouterr().out
    original = json.loads((cfg_dir(cfg) / "comparison.json").read_text())
    again = json.loads((out / "comparison.json").read_text())
    assert again == original
    assert (out / "report.md").read_text() == (cfg_dir(cfg) / "report.md").read_text()
    assert all((out / f).stat().st_size > 0 for f in ["report.md", "report.html"]
               + [f for f, _, _ in FIGURES])


def edited_copy(source: str, target, **changes):
    """A copy of a run folder whose results.json has ``changes``."""
    import shutil

    shutil.copytree(source, target)
    results = json.loads((target / "results.json").read_text())
    results.update(changes)
    (target / "results.json").write_text(json.dumps(results))
    return str(target)


@pytest.mark.parametrize("case, message", [
    ("unfinished", "is not finished (3 of 3 tasks done, no results.json): finish it with "
                   "`retain run --resume"),
    ("empty", "holds no finished run (no results.json)"),
    ("corrupt", "results.json is not valid JSON (Expecting property name"),
    ("stream", "are runs on different streams (stream differ): compare runs of one stream"),
    ("kind", "are runs on different streams (kind differ)"),
    ("order", "have seed 0 with different class orders or tasks"),
    ("seeds", "seq-lora has seeds [0] where the comparison has [0, 1]: give every method the "
              "same seeds"),
    ("twice", "are the same run (method, options and seed 0): give each once"),
    ("option", "--runs compares finished runs as they are: drop --profile, --seeds"),
    ("into a run", "holds a run: choose another --out for the comparison"),
])
def test_compare_runs_refuses_in_one_line(case, message, compared, tmp_path, capsys):
    cfg, _ = compared
    runs, out, extra = run_dirs(cfg), tmp_path / "cmp", []
    seq0 = runs[2]
    if case == "unfinished":
        runs[2] = edited_copy(seq0, tmp_path / "run")
        (tmp_path / "run" / "results.json").unlink()
    elif case == "corrupt":
        runs[2] = edited_copy(seq0, tmp_path / "run")
        (tmp_path / "run" / "results.json").write_text("{")
    elif case == "empty":
        (tmp_path / "run").mkdir()
        runs[2] = str(tmp_path / "run")
    elif case in ("stream", "kind"):
        runs[2] = edited_copy(seq0, tmp_path / "run", **{case: "other"})
    elif case == "order":
        order = json.loads((cfg_dir(cfg) / "runs/seq-lora/seed0/results.json").read_text())[
            "class_order"]
        runs[2] = edited_copy(seq0, tmp_path / "run", class_order=order[::-1])
    elif case == "seeds":
        runs = runs[:3]
    elif case == "twice":
        runs.append(seq0)
    elif case == "option":
        extra = ["--seeds", "0,1", "--profile", "smoke"]
    else:
        out = cfg_dir(cfg) / "runs/seq-lora/seed0"
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert main(["compare", "--runs", *runs, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("retain: error: ") and message in err[0]
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


def test_compare_runs_names_one_method_with_several_options_by_folder(compared, tmp_path):
    from retain.comparison import compare_runs

    cfg, _ = compared
    seq = run_dirs(cfg, ("seq-lora",))
    saved = json.loads((cfg_dir(cfg) / "runs/seq-lora/seed0/results.json").read_text())
    other = [edited_copy(d, tmp_path / f"r16-seed{s}",
                         config={**saved["config"], "seed": s, "method_options": {"r": 16}})
             for s, d in enumerate(seq)]
    comparison = compare_runs([*run_dirs(cfg, ("frozen-ncm",)), *seq, *other], tmp_path / "c")
    assert list(comparison["methods"]) == ["frozen-ncm", f"seq-lora ({seq[0]})",
                                           f"seq-lora ({other[0]})"]
    assert [r["config"]["seed"] for r in comparison["methods"][f"seq-lora ({other[0]})"][
        "runs"]] == [0, 1]


def test_report_on_a_run_folder_reports_that_run(compared, capsys):
    from pathlib import Path

    cfg, _ = compared
    run = Path(run_dirs(cfg)[0])
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report' / 'report.md'}" in capsys.readouterr().out
    assert (run / "report" / "accuracy_matrices.png").is_file()


def test_compare_progress_lines_name_the_method_and_seed(compared, tmp_path, capsys):
    cfg, _ = compared
    compare(dataclasses.replace(cfg, retention=False, out=str(tmp_path / "c")), ["frozen-ncm"],
            [3], progress=True)
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("compare, run 1 of 1:"))
    assert lines[header].startswith("compare, run 1 of 1: frozen-ncm, seed 3 (running, ")
    assert any(line.startswith("task 1/") for line in lines[header + 1:])


def test_a_comparison_names_the_settings_its_runs_differ_in(compared, tmp_path, capsys):
    """Runs made in another precision are compared, and the printout and the report say so."""
    cfg, _ = compared
    seq = run_dirs(cfg, ("seq-lora",))
    saved = json.loads((cfg_dir(cfg) / "runs/seq-lora/seed0/results.json").read_text())
    half = [edited_copy(d, tmp_path / f"bf16-seed{s}",
                        config={**saved["config"], "seed": s, "mixed_precision": "bf16"})
            for s, d in enumerate(seq)]
    out = tmp_path / "c"
    assert main(["compare", "--runs", *run_dirs(cfg, ("frozen-ncm",)), *half, "--out",
                 str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    first = saved["config"]["mixed_precision"]
    assert f"mixed_precision (frozen-ncm: {first}, seq-lora: bf16)" in printed
    report = (out / "report.md").read_text()
    assert "## Settings that differ" in report and f"| mixed_precision | {first} | bf16 |" in report
    assert "Settings that differ" in (out / "report.html").read_text()


def test_the_training_loss_figure_has_a_panel_per_head_and_restarts_its_mean_per_task(
        tmp_path, monkeypatch):
    """Two heads' losses never share an axis; the moving mean of a task never reads the steps of
    the task before (a loss of 10 then 0: no mean point between the two)."""
    from retain.reporting import figures

    shown = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path, title: shown.update(fig=fig))
    log = {"task": [0] * 5 + [1] * 5, "loss": [10.0] * 5 + [0.0] * 5, "lr": [1e-3] * 10}
    comparison = {"seeds": [0], "benchmark": "b", "profile": "p", "methods": {
        name: {"runs": [{"head": head, "training_log": log}]}
        for name, head in (("a", "linear"), ("b", "growing"), ("c", "linear"))}}
    figures.training_loss(comparison, tmp_path / "loss.png", window=3)
    axes = shown["fig"].axes
    assert [ax.get_ylabel() for ax in axes] == ["training loss (head: linear)",
                                                 "training loss (head: growing)"]
    means = [line for line in axes[0].lines if line.get_linewidth() > 1]
    assert len(means) == 4  # a and c, each task's own mean
    for line in means:
        assert set(line.get_ydata().tolist()) in ({10.0}, {0.0})


def test_compare_runs_a_method_with_its_preset_beside_its_defaults(compared, tmp_path, capsys):
    """``METHOD:PRESET`` is an entry of its own: its runs resolve the preset (Share's paper:
    lr 4e-3, weight decay 0.1, 6% warm-up) in their own folder, the plain entry keeps the
    defaults; an unknown preset is one line before any run."""
    cfg, _ = compared
    out = tmp_path / "c"
    small = dataclasses.replace(cfg, retention=False, out=str(out))
    got = compare(small, ["share", "share:paper"], [0], progress=False)
    assert list(got["methods"]) == ["share", "share:paper"]
    paper = got["methods"]["share:paper"]["runs"][0]["config"]
    plain = got["methods"]["share"]["runs"][0]["config"]
    assert (paper["lr"], paper["weight_decay"], paper["warmup_ratio"]) == (4e-3, 0.1, 0.06)
    assert (plain["lr"], plain["weight_decay"]) == (5e-4, 0.0)
    assert (out / "runs/share--paper/seed0/results.json").is_file()
    assert main(["compare", "--data", cfg.data, "--backbone", cfg.backbone, "--profile",
                 "smoke", "--methods", "frozen-ncm,plate:paper", "--out",
                 str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "plate has no preset 'paper'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad" / "runs").exists()
