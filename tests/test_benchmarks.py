"""benchmarks/results/ holds only what a script produces or a page cites, every file the driver
wrote says how it was made, and every results table in the docs renders (no training here)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# scripts that save nothing under benchmarks/results/
NOT_SAVING = {"driver.py": "the driver itself",
              "gpu.py": "runs on a lent GPU machine into its --out folder (brought back)"}


def load_driver():
    spec = importlib.util.spec_from_file_location("benchmarks_driver", BENCH / "driver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = load_driver()
CITED = "\n".join(p.read_text() for p in PAGES)


def producer(name: str) -> str | None:
    for script, patterns in driver.PRODUCERS.items():
        if any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
            return script
    return None


def test_a_saved_result_says_how_it_was_made():
    bad = []
    for path in sorted(RESULTS.glob("*.json")):
        if path.name in driver.LEGACY:
            continue  # written before the driver; its entry says how
        data = json.loads(path.read_text())
        if not (isinstance(data, dict) and "command" in data and "commit" in data):
            bad.append(path.name)
        elif not data["command"].startswith(("python benchmarks/", "retain ")):
            bad.append(f"{path.name}: {data['command']}")
        elif any("label" not in row for row in data.get("rows", [])):
            bad.append(f"{path.name}: a row without a label")
    assert not bad, f"save these through benchmarks/driver.py: {bad}"


def test_legacy_entries_name_files_that_exist():
    missing = [name for name in driver.LEGACY if not (RESULTS / name).is_file()]
    assert not missing, f"drop these from driver.LEGACY (the files are gone): {missing}"


def test_every_result_is_produced_by_a_script_or_cited():
    stray = []
    for path in sorted(RESULTS.iterdir()):
        if path.name.endswith(".tmp"):
            continue
        script = producer(path.name)
        cited = f"benchmarks/results/{path.name}" in CITED or (
            path.is_dir() and f"{path.name}/" in CITED)
        if not (script or cited) or (script and not (BENCH / script).is_file()):
            stray.append(path.name)
    assert not stray, (f"no script in driver.PRODUCERS writes these and no page cites them: "
                       f"{stray}; make a script produce them or delete them")


def test_every_script_saves_through_the_driver():
    scripts = {p.name for p in BENCH.glob("*.py")} - set(NOT_SAVING)
    assert scripts == set(driver.PRODUCERS), "driver.PRODUCERS and benchmarks/*.py differ"
    for name in scripts:
        text = (BENCH / name).read_text()
        assert "from driver import" in text, f"{name} does not save through the driver"
        assert '/ "results"' not in text, f"{name} writes under results/ itself"


MARKERS = sorted({(m.group(1), m.group(2)) for page in PAGES
                  for m in re.finditer(r"<!-- results: ([\w.-]+)(?: ([^\s>]+))? -->",
                                       page.read_text())}, key=str)


def test_the_docs_use_results_markers():
    assert ("lm3_quick", "seq-ft,seq-lora") in MARKERS  # the row once copied on five pages


def test_every_results_marker_renders():
    for name, select in MARKERS:
        lines = driver.table(name, select).splitlines()
        heads = ("| run |", "| configuration |", "| model, method |", "| K (last hidden",
                 "| K | rule |")
        assert len(lines) >= 3 and lines[0].startswith(heads), (name, select)
        if select and "=" not in select and select != "spreads":
            assert len(lines) == 2 + len(select.split(",")), (name, select)


def test_save_writes_the_command_and_the_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "RESULTS", tmp_path)
    monkeypatch.setattr("sys.argv", [str(BENCH / "lm.py"), "--methods", "a b"])
    driver.save_table("t.json", [{"label": "x", "v": 1}])
    driver.save_table("t.json", [{"label": "y", "v": 2}])
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["command"] == "python benchmarks/lm.py --methods 'a b'"
    assert set(saved["commit"]) == {"hash", "dirty"}
    assert [r["label"] for r in saved["rows"]] == ["x", "y"]
    assert all(r["command"] == saved["command"] for r in saved["rows"])


def test_the_methods_tables_are_written_from_the_catalogue():
    spec = importlib.util.spec_from_file_location("doc_tables", REPO / "scripts/doc_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    for path, docs in tables.FILES.items():
        assert tables.rewritten(path, docs) == path.read_text(), (
            f"{path.name}: run python scripts/doc_tables.py")
    from retain.catalogue import METHODS, methods_markdown

    text = methods_markdown()
    assert all(f"[`{name}`]" in text and info.description in text
               for name, info in METHODS.items())
    assert "| 2e-05 / 0.0001 |" in text  # seq-ft: classification / lm rate


def test_cost_rows_and_a_saved_single_run_render_from_their_files():
    share = driver.table("head_cost_share_wordnet45_quick").splitlines()
    assert share[2].startswith("| share/analytic, before (5877b36) | 0.662162 | 168.0 | 30.8% |")
    halves = driver.table("ntk-cl_halves_wordnet45_quick").splitlines()
    assert len(halves) == 3 and "| 0.267 |" in halves[2] and "| 0.923 -> 0.040 |" in halves[2]


def test_smoke_times_merge_by_method_and_keep_each_rows_provenance(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports the driver as ``driver``
    spec = importlib.util.spec_from_file_location("smoke_time", BENCH / "smoke_time.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    earlier = {"command": "python benchmarks/smoke_time.py", "commit": {"hash": "a"},
               "methods": {"plate": {"median_seconds": 20.0},
                           "share": {"median_seconds": 21.0, "command": "own", "commit": "b"},
                           "ntk-cl": {"median_seconds": 30.0}}}
    new = {"ntk-cl": {"median_seconds": 28.0, "command": "now", "commit": "c"}}
    rows = smoke.merged(earlier, new)
    assert list(rows) == ["plate", "share", "ntk-cl"]
    assert rows["ntk-cl"] == new["ntk-cl"]  # run again: replaced
    assert rows["plate"] == {"median_seconds": 20.0, **{k: earlier[k] for k in ("command",
                                                                                "commit")}}
    assert rows["share"]["command"] == "own" and rows["share"]["commit"] == "b"
    assert smoke.merged(None, new) == new


def test_two_benchmarks_seeds_render_side_by_side_and_a_missing_row_is_a_dash():
    name = "seeds_wordnet45_quick+seeds_debian30_quick"
    lines = driver.table(name, "inflora,frozen-ncm/analytic").splitlines()
    assert lines[0].startswith("| configuration | head | wordnet45 validation |")
    assert "debian30 lowest retention |" in lines[0] and len(lines) == 4
    wordnet = {r["label"]: r for r in driver.load_rows("seeds_wordnet45_quick.json")}
    assert f"| {wordnet['inflora']['mean']['final_accuracy']:.3f} ± " in lines[2]
    assert "| 1.000 |" in lines[3] and "± 0.000" not in lines[3]  # seed-free: no spread
    try:
        driver.table(name, "no-such-entry")
    except ValueError as e:
        assert "no-such-entry" in str(e)
    else:
        raise AssertionError("an unknown label must be an error")


def test_the_width_limit_is_what_a_wide_relu_projection_tends_to(monkeypatch):
    """feature_layers.py's ``inf`` row: ReLU(x R) ReLU(y R)^T / M over M Gaussian columns
    tends to the arc-cosine kernel as scaled there (a wrong constant or angle term fails)."""
    import torch

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("feature_layers", BENCH / "feature_layers.py")
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g,
                                                                          dtype=torch.float64)
    x[1] = -y[0]  # opposite directions: the kernel is 0 there
    r = torch.randn(8, 400_000, generator=g, dtype=torch.float64)
    wide = torch.relu(x @ r) @ torch.relu(y @ r).T / r.shape[1]
    exact = layers.arc_cosine(x, y)
    assert torch.allclose(wide, exact, atol=0.02 * exact.abs().max())
    assert exact[1, 0].abs() < 1e-9 and torch.allclose(layers.arc_cosine(x, x).diagonal(),
                                                       (x * x).sum(1) / 2)
