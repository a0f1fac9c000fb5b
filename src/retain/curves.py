"""Learning and forgetting during training, for language models (``--probe-every N``): every N
optimiser steps, and at the end of each task, the current task's test perplexity (what is
learnt) and the perplexity of each English probe as a ratio to the untouched model (what is
kept), on fixed small subsets: the task's first ``TASK_SEQUENCES`` test sequences and the first
``PROBE_SEQUENCES`` of every probe of :func:`retain.retention.lm_probes`. One point before the
first task too. PLATE's figure plots the one against the other."""

from __future__ import annotations

from typing import Any

import torch

from retain.kinds import token_nll

TASK_SEQUENCES = 8
PROBE_SEQUENCES = 4


class Curves:
    """The subsets, the untouched model's perplexities on them, and one point per call."""

    def __init__(self, cfg, backbone, device: torch.device, autocast):
        from retain.backbones import load_backbone
        from retain.retention import lm_probes

        self.every, self.backbone, self.device = cfg.probe_every, backbone, device
        self.max_length, self.autocast = cfg.max_length, autocast
        self.probes = {name: ids[:PROBE_SEQUENCES] for name, ids in
                       lm_probes(backbone.tokenizer, cfg).items()}
        fresh = load_backbone(cfg.backbone, cfg.pooling)  # untouched, whatever was trained
        fresh.model.to(device).eval()
        self.untouched = {name: self._perplexity(fresh.token_logits, self._batch(ids))
                          for name, ids in self.probes.items()}
        del fresh

    def _batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids)
                .to(self.device), "labels": ids.to(self.device)}

    @torch.no_grad()
    def _perplexity(self, logits_of, batch: dict[str, torch.Tensor]) -> float:
        with self.autocast():
            nll, n = token_nll(logits_of(batch), batch["labels"])
        return float(torch.exp(nll.double() / n))

    def due(self, task_step: int, last: bool) -> bool:
        return last or task_step % self.every == 0

    def point(self, method, task, step: int, task_step: int) -> dict[str, Any]:
        """One point: the method as it is now (left in the mode it was in)."""
        training = method.training
        method.eval()
        try:
            items = task.test.items[:TASK_SEQUENCES]
            batch = {k: v.to(self.device) for k, v in
                     self.backbone.batch(items, self.max_length).items()}
            task_ppl = self._perplexity(method.predict, batch)
            english = {name: self._perplexity(method.predict, self._batch(ids))
                       / self.untouched[name] for name, ids in self.probes.items()}
        finally:
            method.train(training)
        return {"task": task.index + 1, "step": step, "task_step": task_step,
                "task_perplexity": task_ppl, "english_ratio": english}

    def describe(self) -> dict[str, Any]:
        """What ``results.json`` says of the curves beside their points."""
        return {"every": self.every, "task_sequences": TASK_SEQUENCES,
                "probe_sequences": PROBE_SEQUENCES,
                "probe_tokens_each": {n: int(ids.shape[1]) for n, ids in self.probes.items()},
                "untouched_perplexity": self.untouched}
