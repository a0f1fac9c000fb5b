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

Batch = dict[str, "torch.Tensor"]
Forward = Callable[[Batch], "torch.Tensor"]


class Kind:
    """One task kind. Subclasses set the fields and implement the hooks below."""

    name: str = ""
    score: str = ""  # the matrix's name
    higher_is_better: bool = True
    profiles: dict[str, Profile] = {}  # for the user's files of this kind
    has_classes: bool = True  # a head over named classes; task-incremental rows
    columns: str = ""  # what a data file holds, for help texts

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

    def evaluate(self, method, tasks, loader, accelerator, cache: FeatureCache | None = None
                 ) -> dict[str, list[float]]:
        """One row of each score matrix: ``matrix`` and any others the kind keeps.
        ``loader(splits, even)`` gives the sharded test batches; ``cache`` keeps test features
        while the method's features cannot have changed."""
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


class Classification(Kind):
    name = "classification"
    score = "accuracy"
    higher_is_better = True
    profiles = CLASSIFICATION_PROFILES
    has_classes = True
    columns = "'text' and 'label' columns (optional: 'split', 'task', 'domain')"

    def title(self, scenario: str) -> str:
        return f"{scenario}-incremental"

    def loss(self, method, batch: Batch) -> torch.Tensor:
        return method.head.loss(method.features(batch), batch["labels"])

    def predict(self, method, batch: Batch) -> torch.Tensor:
        return method.head.logits(method.features(batch))

    def output(self, backbone, model) -> Forward:
        return lambda batch: backbone.features(batch, model)

    def method_output(self, method) -> Forward:
        return method.features

    def evaluate(self, method, tasks, loader, accelerator, cache: FeatureCache | None = None
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
    profiles = LM_PROFILES
    has_classes = False
    columns = "'text' and 'task' columns"

    def title(self, scenario: str) -> str:
        return "language modelling"

    def scenario(self, requested: str) -> str:
        return "lm"

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

    def evaluate(self, method, tasks, loader, accelerator, cache: FeatureCache | None = None
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


class FeatureCache:
    """Each task's test features (and labels), embedded once and kept for as long as the
    tensors that make features have not changed: everything the method stores but its head
    (compared exactly after every task). A frozen backbone (frozen-ncm, first-session after its
    first task) then embeds each test item once in a run, so evaluation grows linearly with the
    number of tasks instead of with its square."""

    def __init__(self) -> None:
        self.fingerprint: list[tuple[str, torch.Tensor]] | None = None
        self.items: dict[int, list[tuple[dict, torch.Tensor]]] = {}

    def check(self, method) -> None:
        """Forget the kept features if what makes them changed since the last evaluation."""
        now = [(n, t) for n, t in method.stored_tensors().items() if not n.startswith("head.")]
        same = self.fingerprint is not None and len(now) == len(self.fingerprint) and all(
            n == m and t.shape == u.shape and bool((t == u).all())
            for (n, t), (m, u) in zip(now, self.fingerprint, strict=True))
        if not same:
            self.items.clear()
            self.fingerprint = [(n, t.detach().clone()) for n, t in now]

    def batches(self, method, task, loader, accelerator):
        """``(batch, features)`` for the task's test items: embedded now, or kept."""
        if task.index not in self.items:
            kept = []
            for batch in loader([task.test], True):
                with accelerator.autocast():
                    kept.append(({"labels": batch["labels"]}, method.features(batch)))
            self.items[task.index] = kept
        yield from self.items[task.index]


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
