"""Task kinds: what a stream's tasks train, how they are scored, predicted and reported.

Everything that differs between kinds lives here; the engine, the methods, ``trained``,
``inference`` and the report ask the stream's :class:`Kind` instead of comparing kind names.

- ``classification``: a head over the stream's classes; rows of the class-incremental accuracy
  matrix and of the task-incremental one (logits restricted to the task's classes); higher is
  better. Predictions are a class and its score.
- ``lm`` (causal language modelling): the model's own next-token loss, no head; rows of the
  per-task test perplexity matrix (``exp`` of the mean negative log-likelihood over all the
  task's test tokens, padding excluded); lower is better. Predictions are a perplexity per row.

Adding a kind: a subclass here, registered in ``KINDS``, and its file reader in
``retain.data.files``. This module imports no torch at import time (the command line checks its
options before torch loads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from retain.errors import RetainError
from retain.profiles import CLASSIFICATION_PROFILES, LM_PROFILES, Profile

if TYPE_CHECKING:
    import torch

SCENARIOS = ("class", "task", "domain")  # of classification streams
Batch = dict[str, "torch.Tensor"]
Forward = Callable[[Batch], "torch.Tensor"]


class Kind:
    """One task kind. Subclasses set the fields and implement the hooks below."""

    name: str = ""
    score: str = ""  # the matrix's name
    higher_is_better: bool = True
    profiles: dict[str, Profile] = {}  # for the user's files of this kind
    columns: str = ""  # what a data file holds, for help texts
    # the summary row's headline retention figure (a key of retain.summary.COLUMNS)
    retention_key: str = ""

    @property
    def label(self) -> str:
        """How messages and help texts name a stream of this kind."""
        return self.name

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    def title(self, scenario: str) -> str:
        """How a report names the setting."""
        raise NotImplementedError

    def scenario(self, requested: str) -> str:
        """The scenario a run of this kind records."""
        return requested

    def check_backbone(self, name: str, modality: str) -> None:
        """Refuse a backbone this kind cannot train (``modality``: text, image, causal-lm)."""

    # --- resolving a run of this kind --------------------------------------------------------
    def head(self, requested: str | None, default: str, heads: Iterable[str]) -> str:
        """The head a run of this kind trains, of ``heads`` (``none``: the model's own
        outputs)."""
        raise NotImplementedError

    def classes_per_task(self, resolved: int) -> int | None:
        """Classes per task as a run of this kind records it (None: it has no classes)."""
        return resolved

    def class_order_seed(self, resolved: int | None) -> int | None:
        """The seed of the class order a run of this kind records (None: no classes)."""
        return resolved

    def check_options(self, config) -> None:
        """Refuse run options this kind does not take (each in one line); ``config``: the run
        config, checked before anything is built."""

    def check_task_option(self, task: int | None) -> None:
        """Refuse ``--task`` (predict, evaluate) where this kind has no tasks to pick among."""

    def check_session_file(self, data: str, columns: set[str], is_folder: bool, run: str
                           ) -> None:
        """Refuse a later session's file (``retain learn``) of another kind than the run's."""

    def one_task_without_column(self, scenario: str) -> bool:
        """A later session's file without a ``task`` column (and no ``--classes-per-task``)
        is one task of all its classes."""
        return False

    # --- reporting -------------------------------------------------------------------------
    def report_figures(self) -> list[tuple[str, str, str]]:
        """Figures a report of this kind adds: (file, title, caption)."""
        return []

    # --- training and scoring --------------------------------------------------------------
    def loss(self, method, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, method, batch: Batch) -> torch.Tensor:
        """What the method's default ``predict`` returns."""
        raise NotImplementedError

    def output(self, backbone, model) -> Forward:
        """A plain model's forward as it is deployed (features, or next-token logits)."""
        raise NotImplementedError

    def method_output(self, method) -> Forward:
        """The same output from a method that cannot merge into its backbone."""
        raise NotImplementedError

    def evaluate(self, method, tasks, loader, accelerator, cache=None
                 ) -> dict[str, list[float]]:
        """One row of each score matrix: ``matrix`` and any others the kind keeps.
        ``loader(splits, even)`` gives the sharded test batches; ``cache`` (the engine's
        ``retain.loop.FeatureCache``) keeps test features while the method's features cannot
        have changed."""
        raise NotImplementedError

    def matrices(self, rows: dict[str, list[list[float]]], scenario: str) -> dict[str, Any]:
        """The results' matrices beyond ``matrix``, keyed as saved, from the recorded rows."""
        return {}

    def main_rows(self, rows: dict[str, list[list[float]]], scenario: str) -> list[list[float]]:
        return rows["matrix"]

    # --- using a trained run -----------------------------------------------------------------
    def probe_item(self, modality: str) -> dict[str, Any]:
        """One item of this kind (a method may run one forward when it prepares)."""
        if modality == "image":
            from PIL import Image

            return {"image": Image.new("RGB", (32, 32))}
        return {"text": "probe"}

    def input_column(self, modality: str) -> str:
        """The column a file to predict on must fill."""
        return "image" if modality == "image" else "text"

    def predict_rows(self, trained, rows: list[dict], task) -> list[dict[str, Any]]:
        raise NotImplementedError

    # ``trained`` (a :class:`retain.trained.Trained`) offers the kinds' scorings and writers;
    # each kind picks its own (no import of that higher room from here)
    def evaluate_rows(self, trained, data, task: int | None, batch_size: int | None
                      ) -> dict[str, Any]:
        """``retain evaluate``: the scores of a labelled file (:mod:`retain.evaluation`)."""
        raise NotImplementedError

    def export_head(self, trained, folder, info: dict[str, Any]) -> None:
        """Write what an export of this kind holds beyond the adapter (a head), into
        ``folder``, and describe it in ``info`` (``retain.json``)."""


class Classification(Kind):
    name = "classification"
    score = "accuracy"
    higher_is_better = True
    retention_key = "retention_min"
    profiles = CLASSIFICATION_PROFILES
    columns = "'text' and 'label' columns (optional: 'split', 'task', 'domain')"

    def title(self, scenario: str) -> str:
        return f"{scenario}-incremental"

    def head(self, requested: str | None, default: str, heads: Iterable[str]) -> str:
        head = requested or default
        if head not in heads:
            raise RetainError(f"unknown head '{head}': choose one of {', '.join(heads)}")
        return head

    def scenario(self, requested: str) -> str:
        if requested not in SCENARIOS:
            raise RetainError(f"unknown scenario '{requested}': choose one of "
                              f"{', '.join(SCENARIOS)}")
        return requested

    def check_options(self, config) -> None:
        if config.probe_every:
            raise RetainError("--probe-every records language-model curves (task perplexity "
                              "and English retention): drop it for a classification stream")
        if config.holdout:
            raise RetainError("--holdout carves held-out sequences from a language-model "
                              "stream: for a classification stream give --validation FRACTION")

    def check_session_file(self, data: str, columns: set[str], is_folder: bool, run: str
                           ) -> None:
        if "label" not in columns and "task" in columns:
            raise RetainError(f"'{data}' holds language-modelling text (a 'task' column, no "
                              f"'label'): the run in {run} is a classification run; give a "
                              "file with 'text' and 'label'")

    def one_task_without_column(self, scenario: str) -> bool:
        return scenario != "domain"

    def evaluate_rows(self, trained, data, task: int | None, batch_size: int | None
                      ) -> dict[str, Any]:
        return trained.score_labelled(data, task, batch_size)  # accuracy, per class, confusion

    def export_head(self, trained, folder, info: dict[str, Any]) -> None:
        trained.write_head(folder, info)

    def loss(self, method, batch: Batch) -> torch.Tensor:
        return method.head.loss(method.features(batch), batch["labels"])

    def predict(self, method, batch: Batch) -> torch.Tensor:
        return method.head.logits(method.features(batch))

    def output(self, backbone, model) -> Forward:
        return lambda batch: backbone.features(batch, model)

    def method_output(self, method) -> Forward:
        return method.features

    def evaluate(self, method, tasks, loader, accelerator, cache=None
                 ) -> dict[str, list[float]]:
        import numpy as np
        import torch

        # the head on kept features gives what predict gives, for a method whose predict is
        # the default one (features, then the head: the engine passes a cache only then) and
        # whose features did not change
        reuse = cache is not None
        if reuse:
            cache.check(method)
        cil, til = [], []
        for task in tasks:
            correct = np.zeros(2)
            total = 0
            classes = torch.as_tensor(task.classes, device=accelerator.device)
            for batch, features in (cache.batches(method, task, loader, accelerator) if reuse
                                    else ((b, None) for b in loader([task.test], True))):
                with accelerator.autocast():
                    if features is not None:
                        logits = method.head.logits(features).float()
                    else:
                        logits = method.predict(batch).float()
                    if method.info.task_aware_prediction:
                        logits_til = method.predict(batch, task_id=task.index).float()
                    else:
                        logits_til = logits
                pred = logits.argmax(-1)
                pred_til = classes[logits_til[:, classes].argmax(-1)]
                pred, pred_til, labels = accelerator.gather_for_metrics(
                    (pred, pred_til, batch["labels"]))
                correct += [(pred == labels).sum().item(), (pred_til == labels).sum().item()]
                total += len(labels)
            cil.append(correct[0] / total)
            til.append(correct[1] / total)
        return {"matrix": cil, "task_incremental": til}

    def main_rows(self, rows: dict[str, list[list[float]]], scenario: str) -> list[list[float]]:
        return rows["task_incremental"] if scenario == "task" else rows["matrix"]

    def matrices(self, rows: dict[str, list[list[float]]], scenario: str) -> dict[str, Any]:
        if scenario == "domain":  # every task holds every class: no task-incremental view
            return {}
        out = {"task_incremental_matrix": rows["task_incremental"]}
        if scenario == "task":
            out["class_incremental_matrix"] = rows["matrix"]
        return out

    def predict_rows(self, trained, rows: list[dict], task) -> list[dict[str, Any]]:
        import torch

        items = [{k: r[k] for k in ("text", "image") if k in r} for r in rows]
        batch = trained.backbone.batch(items, trained.config.max_length)
        batch = {k: v.to(trained.device) for k, v in batch.items()}
        logits = trained.method.predict(batch, None if task is None else task.index).float()
        if task is not None:  # the task's classes only
            within = torch.full_like(logits, float("-inf"))
            within[:, task.classes] = logits[:, task.classes]
            logits = within
        score, index = logits.max(-1)
        return [{"class": trained.class_names[i], "score": s}
                for s, i in zip(score.tolist(), index.tolist(), strict=True)]


class LanguageModelling(Kind):
    name = "lm"
    score = "perplexity"
    higher_is_better = False
    retention_key = "retention_worst_perplexity"
    profiles = LM_PROFILES
    columns = "'text' and 'task' columns"

    label = "language modelling"  # over Kind.label

    def title(self, scenario: str) -> str:
        return self.label

    def scenario(self, requested: str) -> str:
        return "lm"

    def head(self, requested: str | None, default: str, heads: Iterable[str]) -> str:
        return "none"

    def classes_per_task(self, resolved: int) -> int | None:
        return None

    def class_order_seed(self, resolved: int | None) -> int | None:
        return None

    def check_options(self, config) -> None:
        head = config.head
        if head not in (None, "none") or config.head_options:
            drop = f"--head {head}" if head not in (None, "none") else "--head-set"
            raise RetainError(f"{self.label} streams have no head; drop {drop}")
        if (config.feature_layers or 1) > 1:
            raise RetainError(f"--feature-layers chooses what a head reads; {self.label} "
                              "streams have no head: drop it")
        if config.validation:
            raise RetainError("--validation carves labelled items per class: for a "
                              "language-model stream give --holdout N (sequences)")

    def check_task_option(self, task: int | None) -> None:
        if task is not None:
            raise RetainError(f"--task applies to classification runs only: leave it out for a "
                              f"{self.label} run")

    def check_session_file(self, data: str, columns: set[str], is_folder: bool, run: str
                           ) -> None:
        if is_folder:
            raise RetainError(f"'{data}' is an image folder: the run in {run} is a "
                              "language-modelling run; give a file with 'text' and 'task' "
                              "columns")
        if "label" in columns:
            raise RetainError(f"'{data}' holds labelled rows: the run in {run} is a "
                              "language-modelling run; give a file with 'text' and 'task' "
                              "columns")

    def evaluate_rows(self, trained, data, task: int | None, batch_size: int | None
                      ) -> dict[str, Any]:
        return trained.score_text(data, task, batch_size)  # perplexity overall and per task

    def report_figures(self) -> list[tuple[str, str, str]]:
        return [
            ("learning_vs_forgetting.png", "Learning against forgetting",
             "Each method's first run during training (--probe-every): the current task's test "
             "perplexity (what is learnt) against the worst English perplexity ratio to the "
             "untouched model (what is lost); a large marker at the end of each task."),
            ("curves_over_steps.png", "Learning and forgetting over steps",
             "The same points over optimiser steps: the current task's test perplexity (top) "
             "and the worst English perplexity ratio (bottom); dotted lines: task boundaries."),
        ]

    def check_backbone(self, name: str, modality: str) -> None:
        if modality != "causal-lm":
            raise RetainError(f"a language-modelling stream needs a causal LM backbone; "
                              f"'{name}' is a {modality} model (try --backbone smollm2 or "
                              "tiny-llama)")

    def loss(self, method, batch: Batch) -> torch.Tensor:
        # the model's own next-token loss (padding labelled -100)
        return method.model(**method.backbone.inputs(batch), labels=batch["labels"]).loss

    def predict(self, method, batch: Batch) -> torch.Tensor:
        return method.backbone.token_logits(batch, method.model)

    def output(self, backbone, model) -> Forward:
        return lambda batch: backbone.token_logits(batch, model)

    def method_output(self, method) -> Forward:
        return method.predict

    def evaluate(self, method, tasks, loader, accelerator, cache=None
                 ) -> dict[str, list[float]]:
        rows = []
        for task in tasks:
            with accelerator.autocast():
                rows.append(perplexity(loader([task.test], False), method.predict))
        return {"matrix": rows}

    def probe_item(self, modality: str) -> dict[str, Any]:
        return {"input_ids": [0, 1, 2, 3]}

    def input_column(self, modality: str) -> str:
        return "text"

    def predict_rows(self, trained, rows: list[dict], task) -> list[dict[str, Any]]:
        """Each row's perplexity over all its tokens: consecutive windows of ``max_length``
        tokens, the first token of each window unscored (as the stream's sequences)."""
        import torch

        tok, size = trained.backbone.tokenizer, trained.config.max_length
        out = []
        for row in rows:
            ids = tok(row["text"], add_special_tokens=False)["input_ids"]
            windows = [ids[i:i + size] for i in range(0, len(ids), size)]
            windows = [w for w in windows if len(w) > 1]
            if not windows:
                out.append({"perplexity": None, "tokens": 0})
                continue
            batch = trained.backbone.batch([{"input_ids": w} for w in windows], size)
            batch = {k: v.to(trained.device) for k, v in batch.items()}
            nll, n = token_nll(trained.method.predict(batch), batch["labels"])
            out.append({"perplexity": float(torch.exp(nll / n)), "tokens": int(n)})
        return out


CLASSIFICATION = Classification()
LM = LanguageModelling()
KINDS: dict[str, Kind] = {k.name: k for k in (CLASSIFICATION, LM)}


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise RetainError(f"unknown task kind '{name}': choose one of {', '.join(KINDS)}")
    return KINDS[name]


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood and the number of scored tokens (labels of
    ``-100`` are padding)."""
    import torch.nn.functional as F

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                          ignore_index=-100, reduction="sum")
    return nll, (labels != -100).sum()


def token_kl(untouched: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
    """Summed per-token KL(untouched || adapted) of the next-token distributions of two models'
    logits on the same tokens (every position but the last, as :func:`token_nll` scores)."""
    pu = untouched[:, :-1].float().log_softmax(-1)
    pa = adapted[:, :-1].float().to(pu.device).log_softmax(-1)
    return (pu.exp() * (pu - pa)).sum()


def perplexity(batches: Iterable[dict], logits_of: Callable[[dict], torch.Tensor]) -> float:
    """``exp`` of the mean per-token NLL over all batches (summed across processes first)."""
    import torch

    from retain.dist import all_reduce_sum

    total = None
    with torch.no_grad():
        for batch in batches:
            nll, n = token_nll(logits_of(batch), batch["labels"])
            part = torch.stack([nll.double(), n.double()])
            total = part if total is None else total + part
    if total is None:
        raise RetainError("no test sequences to score")
    total = all_reduce_sum(total)
    return float(torch.exp(total[0] / total[1].clamp_min(1)))
