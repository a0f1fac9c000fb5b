"""What every benchmark script shares: saving a result with its provenance, one row format for
tables of runs, the settings-table driver, and the list of which script writes which file.

Every JSON a script saves through :func:`save` carries, under fixed keys, ``command`` (the exact
command line: ``python benchmarks/X.py ...``) and ``commit`` (``{"hash": short hash, "dirty":
whether ``src/`` or ``benchmarks/`` differed from it}``). Tables of runs (:func:`save_table`) are
lists of rows under ``rows``; each row carries the command and commit of the invocation that
made it, since one table gathers the rows of several invocations.

Files written before this driver carry no ``command`` and ``commit``; :data:`LEGACY` names them
with the command their docs cite, until a rerun replaces them. ``tests/test_benchmarks.py``
checks both lists against ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"

# script (under benchmarks/) -> the result names it writes (fnmatch patterns under results/)
PRODUCERS: dict[str, tuple[str, ...]] = {
    "baselines.py": ("baselines_*.json",),
    "grow_identity.py": ("grow_identity_smollm2.json",),
    "head_cost.py": ("head_cost_*.json",),
    "heads.py": ("heads_*.json",),
    "identity.py": ("identity_*.json",),
    "inference_ratio.py": ("inference_ratio_*.json",),
    "inflora_boundary.py": ("inflora_boundary_*.json",),
    "inflora_options.py": ("inflora_options_*.json",),
    "lm.py": ("lm3_*.json", "lmfar_*.json"),
    "load_time.py": ("load_time.json",),
    "peer.py": ("peer_*.json",),
    "seeds.py": ("seeds_*.json",),
    "rule_after.py": ("rule_after_*.json",),
    "feature_layers.py": ("feature_layers_*.json",),
    "lambda_rule.py": ("lambda_rule_*.json",),
    "lmfar_frontier.py": ("frontier_lmfar*.json",),
    "plate_drift.py": ("plate_drift.json",),
    "plate_input_energy.py": ("plate_input_energy*.json",),
    "plate_options.py": ("plate_options_*.json",),
    "plate_retention.py": ("plate_retention_*.json",),
    "plate_selection.py": ("plate_selection_*.json",),
    "plate_selection_width.py": ("plate_selection_width.json",),
    "resume.py": ("resume_*.json",),
    "share_update.py": ("share_update_*.json", "share_dropped_*.json"),
    "smollm2_load.py": ("smollm2_load.json",),
    "smollm2_shakespeare.py": ("smollm2_shakespeare_*.json",),
    "smoke_time.py": ("smoke_time_*.json",),
    "step_time.py": ("step_time_*.json",),
}

# results written before this driver (no command or commit inside, or not both): name -> how
# they were made, as the docs or their own fields record it; a rerun replaces the file and its entry
_STEP_TIME = ("python benchmarks/step_time.py (--a, --b, --set-a/--set-b, --after, --tag as "
              "its fields record)")
LEGACY: dict[str, str] = {
    "baselines_quick.json": "python benchmarks/baselines.py --profile quick (and --heads "
                            "extras, not recorded)",
    "grow_identity_smollm2.json": "python benchmarks/grow_identity.py",
    "heads_quick.json": "python benchmarks/heads.py --profile quick (on one H200)",
    "heads_quick-cpu.json": "python benchmarks/heads.py --tag cpu --no-refit --only LABEL",
    "inflora_boundary_quick.json": "python benchmarks/inflora_boundary.py --profile quick "
                                   "--tasks 2",
    "inflora_options_quick.json": "python benchmarks/inflora_options.py --profile quick",
    "lm3_quick.json": "python benchmarks/lm.py --profile quick --methods "
                      "seq-lora,inflora,plate,seq-ft,share; later --methods "
                      "grow,grow/gradient-third,grow/gradient-third-lr0.0002",
    "plate_drift.json": "python benchmarks/plate_drift.py --r 32 --tau 0.5,0.7,0.8,0.9,0.95,0.98",
    "plate_input_energy.json": "python benchmarks/plate_input_energy.py --r 32",
    "plate_input_energy_max-rank32.json": "python benchmarks/plate_input_energy.py --r 32 "
                                          "--max-rank 32",
    "plate_options_quick.json": "python benchmarks/plate_options.py --profile quick",
    "plate_retention_quick.json": "python benchmarks/plate_retention.py --profile quick",
    "plate_selection_minilm.json": "python benchmarks/plate_selection.py --r 8 --tau 0.9",
    "plate_selection_width.json": "python benchmarks/plate_selection_width.py",
    "resume_seq-lora.json": "its command inside, no commit",
    "share_update_minilm.json": "python benchmarks/share_update.py --backbone minilm --tasks 9",
    "smollm2_load.json": "python benchmarks/smollm2_load.py",
    "smollm2_shakespeare_200.json": "python benchmarks/smollm2_shakespeare.py --chunks 200",
    "step_time_inflora_vs_seq-lora.json": _STEP_TIME,
    "step_time_ntk-cl_vs_frozen-ncm.json": _STEP_TIME,
    "step_time_ntk-cl_vs_seq-lora.json": _STEP_TIME,
    "step_time_plate_vs_seq-lora_all-linear.json": _STEP_TIME,
    "step_time_plate_vs_seq-lora_query-value-same-layers.json": _STEP_TIME,
    "step_time_plate_vs_seq-lora_query-value.json": _STEP_TIME,
    "step_time_share_vs_seq-lora_after-task1.json": _STEP_TIME,
}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def command() -> str:
    """This process's command line as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    try:
        first = str(script.relative_to(REPO)) if script else "python"
    except ValueError:
        first = str(script)
    return " ".join(["python", shlex.quote(first), *map(shlex.quote, sys.argv[1:])])


def commit() -> dict[str, Any]:
    """The checked-out commit (short hash, None outside git) and whether the code differed from
    it: tracked files under ``src/`` or ``benchmarks/`` changed (results excluded)."""
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks",
                   ":(exclude)benchmarks/results")
    return {"hash": _git("rev-parse", "--short", "HEAD") or None, "dirty": bool(changed)}


def provenance() -> dict[str, Any]:
    return {"command": command(), "commit": commit()}


def save(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``benchmarks/results/<name>`` with ``command`` and ``commit`` first;
    the file appears whole or not at all."""
    dest = RESULTS / name
    body = {**provenance(), **{k: v for k, v in data.items() if k not in ("command", "commit")}}
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(dest)
    print(f"saved {dest}", flush=True)
    return dest


def load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def load_rows(name: str) -> list[dict[str, Any]]:
    """The rows of a saved table ([] when there is none); a saved single run (``results``:
    one ``results.json``) is one row labelled by its method, the options that differ from its
    defaults and its head."""
    path = RESULTS / name
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if "rows" not in data and "results" in data:
        from retain.frontier import label  # the method and the options off its defaults

        results = data["results"]
        return [run_row(f"{label(results)} ({results['head']} head)", results)]
    return data["rows"]


def stamp(row: dict[str, Any]) -> dict[str, Any]:
    """The row with this invocation's command and commit (those of a row made earlier stay)."""
    return {**row, **provenance()} if "command" not in row else row


def save_table(name: str, rows: list[dict[str, Any]], order: list[str] | None = None,
               **fields: Any) -> Path:
    """Merge ``rows`` into the saved table by ``label`` (a new row replaces the old one of its
    label; the others stay), ordered by ``order`` where given, and save it."""
    merged = {r["label"]: r for r in load_rows(name)}
    merged.update({r["label"]: stamp(r) for r in rows})
    if order is not None:
        rank = {label: i for i, label in enumerate(order)}
        labels = sorted(merged, key=lambda x: rank.get(x, len(rank)))
    else:
        labels = list(merged)
    return save(name, {**fields, "rows": [merged[label] for label in labels]})


def run_row(label: str, results: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The one row format of a run in a table: its label, the summary row of ``retain.summary``,
    the settings it ran with and its score matrix."""
    from retain.summary import summary_row

    cfg, metrics, cost = results["config"], results["metrics"], results["cost"]
    row = {"label": label, **summary_row(results), "lr": cfg["lr"], "head_lr": cfg["head_lr"],
           "method_options": cfg["method_options"], "head_options": cfg["head_options"],
           "matrix": results["matrix"], "steps": cost.get("steps"), "device": cost.get("device")}
    if "relative_forgetting" in metrics:
        row["relative_forgetting"] = metrics["relative_forgetting"]
    shakespeare = (results.get("retention") or {}).get("shakespeare_perplexity")
    if shakespeare:
        row["shakespeare_perplexity"] = shakespeare.get("score")
        row["shakespeare_perplexity_untouched"] = shakespeare.get("untouched")
    return {**row, **extra}


# name -> (method, head or None, lr or None, head_lr or None, method options)
Settings = dict[str, tuple[str, str | None, float | None, float | None, dict]]


def settings_table(settings: Settings, folder: str, tag: str, description: str) -> None:
    """Named settings run one after another on one benchmark profile, saved as one table.

    Each run lives in ``runs/<folder>/<name>/`` (``{profile}`` in the folder is the profile); a
    finished run of the same config is read, not run again (``retain run ... --out`` that folder
    gives the same run). The rows go to ``benchmarks/results/<tag>_<profile>.json`` and are
    printed. Run nothing beside it: timings taken next to another job are worthless on 2 cores.
    """
    from retain import RunConfig
    from retain.engine import run_or_load

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", default="", help="comma list of setting names (default: all)")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n] or list(settings)
    unknown = [n for n in names if n not in settings]
    if unknown:
        p.error(f"unknown settings {unknown}; known: {', '.join(settings)}")
    rows = []
    for name in names:
        method, head, lr, head_lr, options = settings[name]
        cfg = RunConfig(method=method, profile=args.profile, head=head, lr=lr, head_lr=head_lr,
                        method_options=dict(options),
                        out=str(Path("runs") / folder.format(profile=args.profile) / name))
        rows.append(run_row(name, run_or_load(cfg, progress=False)))
        print(json.dumps({k: rows[-1][k] for k in ("label", "final_accuracy")}), flush=True)
        save_table(f"{tag}_{args.profile}.json", rows, order=list(settings))


# --- tables for the docs (docs/hooks.py renders ``<!-- results: NAME [LABELS] -->``) ----------

def _f(x: Any, digits: int = 3) -> str:
    if x is None or x != x:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:.{digits}f}"


def _first_task(row: dict[str, Any]) -> str:
    """The first task's accuracy right after it and after the last task."""
    first = row.get("first_task_accuracy")
    if not isinstance(first, list) and row.get("matrix"):
        first = [line[0] for line in row["matrix"]]
    return f"{first[0]:.3f} -> {first[-1]:.3f}" if isinstance(first, list) and first else "n/a"


def cost_table(rows: list[dict[str, Any]]) -> str:
    """Rows of ``head_cost.py``: where a run's seconds go at task boundaries, before and after
    a change (each row's note says which), and its checkpoint's size."""
    out = ["| run | final accuracy | boundary s (head) | boundary share | evaluation s | wall s "
           "| checkpoint MB |", "|" + "---|" * 7]
    for r in rows:
        head = r.get("head_seconds")
        share = r.get("boundary_share")
        out.append("| " + " | ".join([
            f"{r['label']}, {r['note']}", f"{r['final_accuracy']:.6f}",
            _f(r["boundary_seconds"], 1) + ("" if head is None else f" ({head:.1f})"),
            "all" if share is None or share >= 1 else f"{100 * share:.1f}%",
            _f(r["eval_seconds"], 1), _f(r["wall_seconds"], 1),
            f"{r['checkpoint_bytes'] / 1e6:.1f}"]) + " |")
    return "\n".join(out)


def classification_table(rows: list[dict[str, Any]]) -> str:
    """Rows of classification runs (wordnet45): accuracy, forgetting, retention, cost."""
    out = ["| run | head lr | final | avg. incr. | forgetting | plasticity | "
           "first task, 1 -> last | task-incr. final | WordSim353 | SimLex-999 | Lee | drift | "
           "stored | boundary s | refit final |", "|" + "---|" * 15]
    for r in rows:
        head_lr = r.get("head_lr")
        out.append("| " + " | ".join([
            r["label"], "n/a" if head_lr is None else f"{head_lr:g}", _f(r["final_accuracy"]),
            _f(r.get("average_incremental_accuracy")), _f(r.get("forgetting")),
            _f(r.get("plasticity")), _first_task(r),
            _f(r.get("task_incremental_final_accuracy")), _f(r.get("retention_wordsim353")),
            _f(r.get("retention_simlex999")), _f(r.get("retention_lee")),
            _f(r.get("retention_embedding_drift")), _f(r["stored_parameters"]),
            _f(r.get("boundary_seconds"), 1), _f(r.get("refit_final_accuracy"))]) + " |")
    return "\n".join(out)


# the options a language-model row names beside its method
_SHOWN = {"seq-lora": ("rank", "target_modules"), "inflora": ("rank", "target_modules"),
          "plate": ("r", "tau", "target_modules"), "share": ("k", "p", "target_modules"),
          "grow": ("factor", "select")}
_SHORT = {"rank": "r", "factor": "g", "query": "q", "value": "v", "key": "k"}


def _sci(x: float) -> str:
    """2e-4, 2.5e-4, 1e-3: a learning rate as the docs write it."""
    mantissa, exponent = f"{x:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def describe(row: dict[str, Any]) -> str:
    """`method` (its main options, and lr where the row records it)."""
    options = row.get("method_options") or {}
    parts = []
    for key in _SHOWN.get(row["method"], ()):
        value = options.get(key)
        if key == "target_modules":
            parts.append("/".join(_SHORT.get(v, v) for v in value or ()))
        elif key == "select":
            parts.append("every block" if value == "all" else
                         f"{options.get('fraction', 0):.2g} of the blocks by {value}")
        else:
            parts.append(f"{_SHORT.get(key, key)} {value}")
    if row.get("steps_per_task"):
        parts.append(f"{row['steps_per_task']} steps a task")
    if row.get("lr") is not None:
        parts.append(f"lr {_sci(row['lr'])}")
    label = f"`{row['method']}`"
    return f"{label} ({', '.join(parts)})" if parts else label


_PROBES = ("shakespeare", "english_definitions", "english_news", "english_encyclopedia")


def lm_table(rows: list[dict[str, Any]]) -> str:
    """Rows of language-model runs (lm3): perplexities, forgetting, retention, cost. Rows with
    held-out English probes (lmfar) show each new task's perplexity right after learning it and
    every probe's ratio and KL (Shakespeare / definitions / news / encyclopedia) instead."""
    far = all("retention_worst_perplexity" in r for r in rows)
    english = (["right after learning", "English ratios (S / d / n / e)", "KL (S / d / n / e)"]
               if far else ["Shakespeare ratio", "KL (nats/token)"])
    head = ["run", "perplexity matrix", "forgetting", "plasticity", "final", *english,
            "trainable", "stored", "median step"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        matrix = " / ".join(", ".join(f"{x:.1f}" for x in line) for line in r["matrix"])
        if far:
            ratio = {"shakespeare": r.get("retention_shakespeare_perplexity"),
                     **{p: r.get(f"retention_{p}_perplexity") for p in _PROBES[1:]}}
            kl = {"shakespeare": r.get("retention_kl_from_untouched"),
                  **{p: r.get(f"retention_{p}_kl") for p in _PROBES[1:]}}
            cells = [", ".join(f"{line[i]:.1f}" for i, line in enumerate(r["matrix"])),
                     " / ".join(_f(ratio[p], 2) for p in _PROBES),
                     " / ".join(_f(kl[p], 2) for p in _PROBES)]
        else:
            cells = [_f(r.get("retention_shakespeare_perplexity")),
                     _f(r.get("retention_kl_from_untouched"))]
        out.append("| " + " | ".join([
            describe(r), matrix, _f(r["forgetting"], 2), _f(r["plasticity"], 1),
            _f(r["final_perplexity"], 1), *cells, _f(r["trainable_parameters"]),
            _f(r["stored_parameters"]), _f(r.get("median_step_seconds"), 2) + " s"]) + " |")
    return "\n".join(out)


def frontier_table(saved: dict[str, Any], select: str | None) -> str:
    """A frontier file's table (``retain.frontier.markdown``: each configuration's envelope at
    matched amounts of learning); ``spreads``: its seed spreads instead."""
    from retain.frontier import markdown, spread_markdown

    if select == "spreads":
        return spread_markdown(saved["seed_spreads"])
    if select:
        raise ValueError(f"a frontier marker takes no selection or 'spreads', got '{select}'")
    return markdown(saved["tables"][0])


def peer_table(saved: dict[str, Any]) -> str:
    """``peer.py``'s runs: retain against the plain transformers + peft loop, per model and
    method: the step and phase ratios, the control's (a second plain loop, ``--control``),
    retain's tokens per second and its share of the measured matmul rate."""
    out = ["| model, method | retain / plain, median step | retain / plain, phase per step | "
           "control / plain, step and phase | retain tokens/s | "
           "retain's share of the matmul rate |", "|" + "---|" * 6]
    for run in saved["runs"]:
        for r in run["rows"]:
            control = (f"{r['control_step_ratio']:.3f} / {r['control_phase_ratio']:.3f}"
                       if "control_step_ratio" in r else "-")
            out.append(f"| {r['model']}, {r['method']} (batches of {r['batch_size']}) | "
                       f"{r['step_ratio']:.3f} | {r['phase_ratio']:.3f} | {control} | "
                       f"{r['tokens_per_second']['retain']:,.0f} | "
                       f"{100 * r['utilisation']['retain']:.0f}% of "
                       f"{run['matmul_flops'] / 1e9:.0f} GFLOP/s |")
    return "\n".join(out)


def _pm(row: dict[str, Any], key: str) -> str:
    mean, std = row["mean"].get(key), row["std"].get(key)
    if mean is None or mean != mean:  # absent or NaN
        return "-"
    # no spread: one seed, or a seed-free run standing for every seed
    spread = not (std is None or std != std or row.get("seed_free"))
    return f"{mean:.3f}" + (f" ± {std:.3f}" if spread else "")


def _seeds_rows(name: str) -> list[dict[str, Any]]:
    """A seeds file's rows, those of its seed-free methods (one run for every seed) marked."""
    free = set(load(name).get("seed_free", ()))
    return [{**r, "seed_free": r.get("method") in free} for r in load_rows(name)]


def seeds_table(rows: list[dict[str, Any]]) -> str:
    """``seeds.py``'s rows: each entry's mean ± sample standard deviation over its seeds of the
    test and validation final accuracy and of the lowest retention ratio, and its wall time."""
    out = ["| configuration | head | seeds | final accuracy (test) | final accuracy (validation) | "
           "lowest retention ratio | forgetting | wall per run |", "|" + "---|" * 8]
    for r in rows:
        walls = r["wall_seconds"]
        seeds = "seed-free" if r.get("seed_free") else len(r["seeds"])
        out.append(f"| `{r['label']}` | {r['head']} | {seeds} | "
                   f"{_pm(r, 'final_accuracy')} | {_pm(r, 'validation_final_accuracy')} | "
                   f"{_pm(r, 'retention_min')} | {_pm(r, 'forgetting')} | "
                   f"{sum(walls) / len(walls) / 60:.1f} min |")
    return "\n".join(out)


def seeds_pair_table(names: list[str], select: str | None) -> str:
    """``seeds.py``'s rows of several benchmarks side by side, one line per configuration (the
    ``select`` labels in that order, or every label of the first file then the others'): each
    benchmark's validation and test final accuracy and lowest retention ratio, mean ± spread
    over its seeds ("-" where a benchmark has no such row)."""
    files = [{r["label"]: r for r in _seeds_rows(f"{n}.json")} for n in names]
    if not all(files):
        raise ValueError(f"results marker names {names}: a file has no rows")
    labels = select.split(",") if select else list(dict.fromkeys(x for f in files for x in f))
    missing = [x for x in labels if not any(x in f for f in files)]
    if missing:
        raise ValueError(f"results marker '{'+'.join(names)}': no rows labelled {missing}")
    bench = [n.removeprefix("seeds_").split("_")[0] for n in names]
    out = ["| configuration | head | " + " | ".join(
        f"{b} validation | {b} test | {b} lowest retention" for b in bench) + " |",
        "|" + "---|" * (2 + 3 * len(names))]
    for x in labels:
        head = next(f[x]["head"] for f in files if x in f)
        cells = [f"{_pm(f[x], 'validation_final_accuracy')} | {_pm(f[x], 'final_accuracy')} | "
                 f"{_pm(f[x], 'retention_min')}" if x in f else "- | - | -" for f in files]
        out.append(f"| `{x}` | {head} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def table(name: str, select: str | None = None) -> str:
    """The markdown table of ``benchmarks/results/<name>.json`` (a frontier file: its table, or
    ``spreads``): every row; with ``select``
    ``LABEL,LABEL``, those rows in that order (a label not in the file is an error); with
    ``FIELD=VALUE``, the rows whose field has that value; ``NAME+NAME`` (seeds files of two
    benchmarks): their rows side by side."""
    if "+" in name:  # seeds files of several benchmarks, side by side
        return seeds_pair_table(name.split("+"), select)
    path = RESULTS / f"{name}.json"
    if path.is_file() and "tables" in (saved := json.loads(path.read_text())):
        return frontier_table(saved, select)
    if path.is_file() and "runs" in saved and "rows" not in saved:
        return peer_table(saved)
    rows = load_rows(f"{name}.json")
    if not rows:
        raise ValueError(f"results marker names '{name}': no rows in benchmarks/results/")
    if select and "=" in select:
        field, value = select.split("=", 1)
        rows = [r for r in rows if str(r.get(field)) == value]
    elif select:
        labels = select.split(",")
        by_label = {r["label"]: r for r in rows}
        missing = [x for x in labels if x not in by_label]
        if missing:
            raise ValueError(f"results marker '{name}': no rows labelled {missing}")
        rows = [by_label[x] for x in labels]
    if not rows:
        raise ValueError(f"results marker '{name} {select}' selects no row")
    if "checkpoint_bytes" in rows[0]:
        return cost_table(rows)
    if "rule" in rows[0]:  # rule_after.py: finished runs under each rule for lambda
        return "\n".join(["| configuration | rule | lambda at the end, per seed | final accuracy "
                          "(validation) | (test) |", "|---|---|---|---|---|"] + [
            f"| `{r['entry']}` | {r['rule']} | {' '.join(f'{x:g}' for x in r['lambdas'])} | "
            f"{_pm(r, 'validation_final_accuracy')} | {_pm(r, 'final_accuracy')} |"
            for r in rows])
    if "mean" in rows[0] and "std" in rows[0]:
        free = {r["label"] for r in _seeds_rows(f"{name}.json") if r["seed_free"]}
        return seeds_table([{**r, "seed_free": r["label"] in free} for r in rows])
    if "heldout_accuracy" in rows[0]:  # feature_layers.py: K (and M) by held-out items
        return "\n".join(["| K (last hidden states) | projection width M | lambda | held-out "
                          "accuracy | test final accuracy |", "|---|---|---|---|---|"] + [
            f"| {r['k']} | {r['projection']} | {r['lambda']:g} | "
            f"{r['heldout_accuracy']:.3f} | {r['test_final_accuracy']:.3f} |" for r in rows])
    if "picks" in rows[0]:  # lambda_rule.py: the analytic head's rule for lambda
        return "\n".join(["| K | rule | lambda after each task | final accuracy (validation) | "
                          "(test) |", "|---|---|---|---|---|"] + [
            f"| {r['k']} | {r['label'].split(' ', 1)[1]} | "
            f"{' '.join(f'{x:g}' for x in r['picks'])} | "
            f"{r['validation_final_accuracy']:.3f} | {r['final_accuracy']:.3f} |" for r in rows])
    return lm_table(rows) if "final_perplexity" in rows[0] else classification_table(rows)
