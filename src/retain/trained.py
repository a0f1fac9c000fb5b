"""A run, rebuilt from its checkpoint to be used: ``retain.load(DIR)`` returns a :class:`Trained`
that predicts (``retain predict``) and exports (``retain export``).

An export is a folder that needs no ``retain`` to load:

- ``model/``: the backbone with the method's changes merged into its weights
  (``save_pretrained``, with its tokenizer or image processor): ``AutoModel`` loads an encoder,
  ``AutoModelForCausalLM`` a decoder;
- ``head.safetensors`` and ``retain.json``: the classification head as plain tensors and how to
  apply them (:class:`~retain.methods.heads.base.ExportedHead`), the class names, the pooling,
  the maximum length;
- ``adapter/``: for methods whose ``peft`` adapter over the pretrained weights holds their whole
  change (``seq-lora``, ``lora-per-task``, ``first-session``, ``joint``, ``share``), the adapter
  as ``peft`` saves it (``PeftModel.from_pretrained(base, DIR/adapter)``); for methods with one
  adapter state per task (``lora-per-task``, ``share``) it is the latest task's, the one that
  predicts without a task id (``adapter_task`` in ``retain.json``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from retain import checkpoint
from retain.checks import check_export_to, check_run_folder, output_format
from retain.config import RunConfig
from retain.data.stream import Stream
from retain.errors import RetainError
from retain.kinds import Kind
from retain.pythonic import python_errors

FORMAT = "retain-export/1"


class Trained:
    """A trained method with its backbone and stream outline, on the CPU unless moved."""

    def __init__(self, directory: Path, config: RunConfig, method, backbone, stream: Stream,
                 tasks_done: int):
        self.directory, self.config, self.method = directory, config, method
        self.backbone, self.stream, self.tasks_done = backbone, stream, tasks_done

    @property
    def kind(self) -> Kind:
        return self.stream.kind

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device

    @property
    def class_names(self) -> list[str]:
        return self.stream.class_names

    def __repr__(self) -> str:
        return (f"Trained({self.config.method}, head {self.config.head}, {self.kind.name}, "
                f"{self.tasks_done} of {len(self.stream)} tasks, from {self.directory})")

    # --- prediction ------------------------------------------------------------------------
    @python_errors
    @torch.no_grad()
    def predict(self, data: str | Path | list, batch_size: int | None = None,
                task: int | None = None) -> list[dict[str, Any]]:
        """One dict per row: the row's own fields, then ``class`` and ``score`` (the head's
        score of that class: cosine for prototypes, the ridge output for analytic, the logit
        for linear heads) or, for a language-modelling run, ``perplexity`` and ``tokens``.
        ``data``: a CSV / JSON Lines file (a ``text`` column, or ``image`` paths), an image
        folder, or a list of texts or item dicts. ``task`` (1 to the tasks learnt): the rows
        belong to that task, so the class is chosen among its classes only, with its own
        adapter where the method keeps one per task (task-incremental prediction)."""
        if batch_size is not None and batch_size < 1:
            raise RetainError(f"--batch-size must be 1 or more, got {batch_size}")
        known = self._task(task)
        rows = self.rows(data)
        size = batch_size or self.config.batch_size
        self.method.eval()
        out = []
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            scored = self.kind.predict_rows(self, chunk, known)
            out.extend({**_plain(row), **s} for row, s in zip(chunk, scored, strict=True))
        return out

    def rows(self, data: str | Path | list) -> list[dict]:
        """The rows of ``data`` to predict on, each with the column this run reads."""
        return _rows(data, self.kind.input_column(self.backbone.modality))

    def _task(self, task: int | None):
        """The stream's task numbered ``task`` (from 1), or None."""
        if task is None:
            return None
        self.kind.check_task_option(task)
        if not 1 <= task <= self.tasks_done:
            raise RetainError(f"--task must be between 1 and {self.tasks_done} (the tasks this "
                              f"run has learnt), got {task}")
        return self.stream.tasks[task - 1]

    def score_labelled(self, data, task: int | None, batch_size: int | None) -> dict[str, Any]:
        """A classification run's scores of a labelled file (its kind's ``evaluate_rows``)."""
        from retain.evaluation import classification_scores

        return classification_scores(self, data, task, batch_size)

    def score_text(self, data, task: int | None, batch_size: int | None) -> dict[str, Any]:
        """A language-modelling run's scores of a text file (its kind's ``evaluate_rows``)."""
        from retain.evaluation import perplexity_scores

        return perplexity_scores(self, data, task, batch_size)

    def write_head(self, folder: Path, info: dict[str, Any]) -> None:
        """The head of an export (its kind's ``export_head``)."""
        export_head(self, folder, info)

    @python_errors
    def evaluate(self, data: str | Path | list, task: int | None = None,
                 batch_size: int | None = None) -> dict[str, Any]:
        """Score a labelled file (``retain evaluate``): accuracy overall, per class and per
        task, and the confusion matrix; for a language-modelling run, the perplexity overall
        and per ``task`` value. See :mod:`retain.evaluation`."""
        from retain.evaluation import evaluate

        return evaluate(self, data, task=task, batch_size=batch_size)

    # --- a later session --------------------------------------------------------------------
    @python_errors
    def learn(self, data: str | Path, classes_per_task: int | None = None,
              progress: bool = False, **options: Any) -> dict[str, Any]:
        """Train the tasks of ``data`` into this run (``retain learn``): everything the method
        and head carry between tasks goes on from the last checkpoint; the run folder's
        checkpoint and ``results.json`` are updated, and this object then holds the grown
        run. Returns the new results. ``options``: this session's run options (``steps``,
        ``lr``, ``epochs``, ``retention``, ...), over the run's."""
        from retain.engine import learn

        device = self.device
        results, _ = learn(self.directory, data, classes_per_task, progress, options=options)
        again = load(self.directory)
        self.config, self.method, self.backbone = again.config, again.method, again.backbone
        self.stream, self.tasks_done = again.stream, again.tasks_done
        self.method.to(device)
        return results

    # --- export ----------------------------------------------------------------------------
    @python_errors
    def export(self, to: str | Path, overwrite: bool = False) -> Path:
        """Write the export folder described in this module's docstring; return its path.
        ``overwrite`` replaces an earlier export there, never other files."""
        dest = check_export_to(self.directory, to, overwrite)
        model = self.method.merged_model()  # refuses where it cannot merge (before writing)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            self._write(model, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        checkpoint.readable(tmp)  # mkdtemp's folder and safetensors' files are 0700 / 0600
        tmp.chmod(0o777 & ~_umask())
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        return dest

    def _write(self, model, tmp: Path) -> None:
        from retain.backbones import _quiet

        with _quiet():
            model.save_pretrained(tmp / "model")
            self.backbone.processor.save_pretrained(tmp / "model")
        info: dict[str, Any] = {
            "format": FORMAT, "method": self.config.method, "kind": self.kind.name,
            "modality": self.backbone.modality, "pooling": self.backbone.pooling,
            "feature_layers": self.backbone.layers,
            "max_length": self.config.max_length, "backbone": self.config.backbone,
            "tasks_done": self.tasks_done, "class_names": self.class_names,
            "model_class": ("AutoModelForCausalLM" if self.backbone.modality == "causal-lm"
                            else "AutoModel")}
        self.kind.export_head(self, tmp, info)
        adapter = self.method.peft_adapter()
        info["adapter"] = None
        if adapter is not None:
            _save_adapter(self.config, *adapter, tmp / "adapter")
            info["adapter"] = "adapter"
            if self.method.info.task_aware_prediction:  # one adapter state per task: the latest
                info["adapter_task"] = self.tasks_done
            (tmp / "adapter" / "README.md").write_text(
                self._adapter_card(info, str(adapter[0].peft_type.value)), encoding="utf-8")
        checkpoint.write_json(tmp / "retain.json", info)

    def _adapter_card(self, info: dict[str, Any], peft_type: str) -> str:
        """The adapter's README.md: what the run was, and how to load and apply it."""
        from retain.backbones import resolve
        from retain.catalogue import TINY

        cfg, base = self.config, resolve(self.config.backbone)
        lm = "head" not in info  # no head (its kind exported none): the model's own outputs
        tiny = cfg.backbone in TINY  # built by retain, random: no folder to load it from
        lines = ["---", "library_name: peft", f"base_model: {base}", "tags:", "- retain",
                 "- continual-learning", f"- {cfg.method}", "---", "",
                 f"# {cfg.method} adapter, trained by retain", "",
                 f"A peft {peft_type} adapter over `{cfg.backbone}` "
                 f"({'a tiny random model that retain builds' if tiny else f'`{base}`'}), "
                 "trained by "
                 f"`retain run --method {cfg.method}` ({'' if lm else f'head {cfg.head}, '}"
                 "mixed precision "
                 f"{cfg.mixed_precision}, seed {cfg.seed}) on the stream `{self.stream.name}`: "
                 f"{self.kind.title(cfg.scenario)}, {self.tasks_done} of {len(self.stream)} tasks "
                 "learnt, one after "
                 "another. `../model/` is the same change merged into the backbone."]
        if "adapter_task" in info:
            lines += ["", f"The method keeps one adapter state per task; this is task "
                          f"{info['adapter_task']}'s, the one that predicts without a task id."]
        lines += ["", "| task | name |" + ("" if lm else " classes |"),
                  "|---|---|" + ("" if lm else "---|")]
        lines += [f"| {i + 1} | {t.name} |"
                  + ("" if lm else f" {', '.join(self.class_names[c] for c in t.classes)} |")
                  for i, t in enumerate(self.stream.tasks[: self.tasks_done])]
        lines += ["", "## Loading it", "", "```python", "import transformers",
                  "from peft import PeftModel"]
        if tiny:
            lines += ["import retain.backbones"]
        if peft_type in ("PLATE", "SHARE"):  # peft knows only its own types
            lines += [f"import retain.methods.{peft_type.lower()}  # registers {peft_type} with "
                      "peft"]
        lines += ["", f'base = retain.backbones.load_backbone("{base}").model' if tiny else
                  f'base = transformers.{info["model_class"]}.from_pretrained("{base}")',
                  'model = PeftModel.from_pretrained(base, "EXPORT/adapter").eval()',
                  'tokenizer = transformers.AutoTokenizer.from_pretrained("EXPORT/model")']
        if lm:
            lines += ['logits = model(**tokenizer(["a text"], return_tensors="pt")).logits',
                      "```"]
            return "\n".join(lines) + "\n"
        lines += ["```", "", "## The head", "",
                  (f"Pool the last hidden state ({info['pooling']} pooling, at most "
                   if info["feature_layers"] == 1 else
                   f"Pool each of the last {info['feature_layers']} hidden states "
                   f"({info['pooling']} pooling, at most ")
                  + f"{info['max_length']} tokens) into features `f`"
                  + ("" if info["feature_layers"] == 1 else
                     " (each L2-normalised, concatenated in order)")
                  + ", then apply "
                  "`EXPORT/head.safetensors` (float32) as `EXPORT/retain.json` states: "
                  f"{info['head']['rule']}. The classes are `class_names` in "
                  "`EXPORT/retain.json`. retain's `examples/predict_without_retain.py` does all "
                  "of it."]
        return "\n".join(lines) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_head(trained: Trained, folder: Path, info: dict[str, Any]) -> None:
    """A classification run's head in an export: ``head.safetensors`` and how to apply it
    (``Kind.export_head``)."""
    head = trained.method.head.export()
    # one dtype, so that the rule below runs as written (the analytic head solves in float64,
    # its projection and the features are float32)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in head.tensors().items()}
    save_file(tensors, str(folder / "head.safetensors"))
    info["head"] = {"scheme": trained.config.head, "transform": head.transform,
                    "dtype": "float32",
                    "rule": "f = pooled features (feature_layers K > 1: the last K hidden "
                            "states each pooled, L2-normalised, concatenated); transform "
                            "(none | normalize: f/|f| | "
                            "relu_projection: relu(f @ projection)); scores = f @ weight.T + "
                            "bias; logit of class c = max of the scores of the rows r with "
                            "row_class[r] == c (no row: -inf)"}


def _save_adapter(config: RunConfig, peft_config, tensors: dict[str, torch.Tensor],
                  dest: Path) -> None:
    """The adapter as ``peft`` saves it: injected into a fresh untouched backbone, filled with
    the run's tensors, saved with ``save_pretrained``."""
    import copy

    from peft import get_peft_model

    from retain.backbones import load_backbone, resolve
    from retain.catalogue import HUB_IDS

    base = load_backbone(config.backbone, config.pooling).model
    peft_config = copy.deepcopy(peft_config)
    # the hub id where retain knows it (its packaged models), so that the adapter travels
    peft_config.base_model_name_or_path = HUB_IDS.get(config.backbone, resolve(config.backbone))
    with warnings.catch_warnings():  # a tiny or hub name is not the base's own path: fine
        warnings.simplefilter("ignore")
        model = get_peft_model(base, peft_config)
    result = model.base_model.model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise RetainError(f"the adapter's tensors do not fit a fresh peft model "
                          f"({result.unexpected_keys[:2]}); export without the adapter")
    model.save_pretrained(dest)


def _plain(row: dict) -> dict:
    """A row's fields that CSV and JSON can hold (image objects are left out)."""
    return {k: v for k, v in row.items() if isinstance(v, str | int | float | bool | None)}


def _rows(data, need: str) -> list[dict]:
    from retain.data.files import read_records

    if isinstance(data, str | Path):
        path = Path(data).expanduser()
        if path.is_dir():
            exts = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
            rows = [{"image": str(p)} for p in sorted(path.rglob("*")) if p.suffix.lower()
                    in exts]
            if not rows:
                raise RetainError(f"image folder '{data}' holds no images (.png, .jpg, ...)")
        else:
            rows = read_records(path)
    else:
        rows = [{"text": d} if isinstance(d, str) else dict(d) for d in data]
    if not rows:
        raise RetainError(f"nothing to predict: '{data}' has no rows")
    for n, row in enumerate(rows, 1):
        if not row.get(need):
            raise RetainError(f"row {n} has no '{need}' value: predicting with this run needs "
                              f"a '{need}' column")
    return rows


def load(directory: str | Path, cpu: bool = True) -> Trained:
    """Rebuild the run in ``directory`` (its ``--out``) from its last checkpoint: the untouched
    backbone, then the method's stored tensors and state on top. The run's data is not needed."""
    from retain.backbones import backbone_of
    from retain.config import Plan
    from retain.engine import rebuild

    directory = Path(directory).expanduser()
    ckpt = check_run_folder(directory).parent
    saved = checkpoint.read_state(ckpt)
    config = RunConfig(**saved["config"])
    backbone = backbone_of(config)
    stream = Stream.from_outline(saved["stream"])
    method = rebuild(Plan.saved(config), backbone, stream, ckpt, saved)
    device = "cpu" if cpu or not torch.cuda.is_available() else "cuda"
    method.to(device).eval()
    return Trained(directory, config, method, backbone, stream, saved["tasks_done"])


def write_rows(rows: list[dict[str, Any]], dest: str | Path | None) -> str | None:
    """Rows as CSV / TSV or JSON Lines by ``dest``'s suffix; with no ``dest``, CSV returned as
    text (for standard output). The file is written whole or not at all (a temporary file
    beside it, then renamed)."""
    fmt = output_format(dest)
    if fmt == "jsonl":
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, delimiter="\t" if fmt == "tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    if dest is None:
        return text
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)  # a new folder: made, not a late crash
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(dest)
    return None
