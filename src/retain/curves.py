"""Learning and forgetting during training, for language models (``--probe-every N``): every N
optimiser steps, and at the end of each task, the current task's perplexity (what is learnt) on
the first ``--probe-task-sequences`` of its test split and, under ``--holdout``, on as many of
its held-out training sequences (never trained on: what a rate or a default is chosen on), and
for the first ``--probe-english-sequences`` of every probe of :func:`retain.retention.lm_probes`
(what is kept) the perplexity as a ratio to the untouched model and the mean per-token
KL(untouched || adapted). One point before the first task too. PLATE's figure plots the one
against the other; :mod:`retain.frontier` turns the points into envelopes."""

from __future__ import annotations

from typing import Any

import torch

from retain.kinds import token_kl, token_nll


class Curves:
    """The subsets, the untouched model's perplexities and log-probabilities on them, and one
    point per call."""

    def __init__(self, cfg, backbone, device: torch.device, autocast, reference):
        """``reference()``: the run's untouched copy of the backbone (``engine.Reference``),
        released once the untouched logits are kept."""
        from retain.retention import lm_probes

        self.every, self.backbone, self.device = cfg.probe_every, backbone, device
        self.max_length, self.autocast = cfg.max_length, autocast
        self.task_sequences = cfg.probe_task_sequences
        self.probes = {name: ids[:cfg.probe_english_sequences] for name, ids in
                       lm_probes(backbone.tokenizer, cfg).items()}
        fresh = reference()  # untouched, whatever was trained
        fresh.model.to(device).eval()
        self.untouched, self.logits = {}, {}  # the untouched logits, for the KL at each point
        for name, ids in self.probes.items():
            batch = self._batch(ids)
            with torch.no_grad(), self.autocast():
                logits = fresh.token_logits(batch).float()
            self.logits[name] = logits
            self.untouched[name] = _perplexity(logits, batch["labels"])
        fresh.model.to("cpu")
        reference.release()

    def _batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids)
                .to(self.device), "labels": ids.to(self.device)}

    @torch.no_grad()
    def _task_perplexity(self, method, items: list[dict[str, Any]]) -> float:
        batch = {k: v.to(self.device) for k, v in
                 self.backbone.batch(items[:self.task_sequences], self.max_length).items()}
        with self.autocast():
            return _perplexity(method.predict(batch), batch["labels"])

    def due(self, task_step: int, last: bool) -> bool:
        return last or task_step % self.every == 0

    @torch.no_grad()
    def point(self, method, task, step: int, task_step: int) -> dict[str, Any]:
        """One point: the method as it is now (left in the mode it was in)."""
        training = method.training
        method.eval()
        try:
            task_ppl = self._task_perplexity(method, task.test.items)
            heldout = (self._task_perplexity(method, task.heldout.items)
                       if task.heldout is not None else None)
            english, kl = {}, {}
            for name, ids in self.probes.items():
                batch = self._batch(ids)
                with self.autocast():
                    logits = method.predict(batch)
                english[name] = _perplexity(logits, batch["labels"]) / self.untouched[name]
                kl[name] = float(token_kl(self.logits[name], logits)
                                 / (ids.shape[0] * (ids.shape[1] - 1)))
        finally:
            method.train(training)
        return {"task": task.index + 1, "step": step, "task_step": task_step,
                "task_perplexity": task_ppl,
                **({"heldout_perplexity": heldout} if heldout is not None else {}),
                "english_ratio": english, "english_kl": kl}

    def describe(self) -> dict[str, Any]:
        """What ``results.json`` says of the curves beside their points."""
        return {"every": self.every, "task_sequences": self.task_sequences,
                "probe_sequences": {n: int(ids.shape[0]) for n, ids in self.probes.items()},
                "probe_tokens_each": {n: int(ids.shape[1]) for n, ids in self.probes.items()},
                "untouched_perplexity": self.untouched}


def _perplexity(logits: torch.Tensor, labels: torch.Tensor) -> float:
    nll, n = token_nll(logits, labels)
    return float(torch.exp(nll.double() / n))
