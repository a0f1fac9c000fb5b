"""retain compare and retain report: runs once per method and seed, tables that match the
results files, figures embedded in the HTML, and rebuilding without training."""

import dataclasses
import json
import math
import re

import pytest

from retain.cli import main
from retain.comparison import compare, mean_std, method_names
from retain.data import build_stream
from retain.errors import RetainError
from retain.reporting import FIGURES, build_report, table
from retain.summary import summary_row


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
            stream = build_stream(dataclasses.replace(cfg, method=name, seed=seed).resolved())
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
    cfg, _ = compared
    page = (cfg_dir(cfg) / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(FIGURES) == 4
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
    from retain.methods import REGISTRY

    assert method_names("all") == list(REGISTRY)
    assert method_names("seq-lora, plate") == ["seq-lora", "plate"]
    with pytest.raises(RetainError, match="unknown method 'nope'"):
        method_names("seq-lora,nope")
    with pytest.raises(RetainError, match="no comparison.json"):
        build_report(tmp_path)


def test_summary_row_reports_the_lowest_retention_ratio():
    results = {"method": "m", "head": "growing", "metrics": {}, "cost": {}, "retention": {
        "wordsim353": {"ratio": 0.9}, "lee": {"ratio": 0.8}}}
    assert summary_row(results)["retention_min"] == 0.8


def test_a_language_model_comparison_gets_its_report(tmp_path):
    from retain import RunConfig
    from retain.comparison import compare, method_names

    cfg = RunConfig(benchmark="lm3", profile="smoke", retention=True, out=str(tmp_path / "c"))
    assert "frozen-ncm" not in method_names("all", "lm")
    comparison = compare(cfg, ["seq-lora"], [0], progress=False)
    assert comparison["methods"]["seq-lora"]["mean"]["final_perplexity"] > 1
    for name in ("accuracy_matrices.png", "accuracy_curves.png", "accuracy_vs_retention.png",
                 "cost_vs_accuracy.png", "report.md"):
        assert (tmp_path / "c" / name).stat().st_size > 0
    assert "final perplexity" in (tmp_path / "c" / "report.md").read_text()
