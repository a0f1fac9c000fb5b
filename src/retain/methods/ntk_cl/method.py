"""NTK-CL for a stream of tasks (Liu et al., 2024): two module families beside a frozen
encoder, each with an averaged copy; three feature views per sample, one cross-entropy each;
the head over the fused view (the paper's prototype inference: ``--preset paper``).

Per training step (four passes through the encoder, the two averaged ones without gradients,
run as two forwards over the batch stacked twice; on the first task the averaged pair is the
encoder alone, one pass):

- ``f_c = [f(averaged adapters) | f(current adapters)]`` (width ``2d``),
- ``f_p = [f(averaged prompts) | f(current prompts)]``,
- ``f_m = fuse(f_c, f_p)``: attention of ``f_p``'s query over the two views (it starts as
  their mean),
- loss = ``CE(f_c) + CE(f_p) + CE(f_m)`` through the head's classifier
  ``+ w_nce contrast(f_m, old prototypes) + w_orth orth(views, span of old prototypes)
  + w_reg ||theta - theta_start||^2``.

After task ``t`` (from 0) the averaged modules become the running mean of the end-of-task
snapshots, ``avg <- t/(t+1) avg + 1/(t+1) current``; then the head (default: analytic, a ridge
regression on ``f_m``; the paper's prototypes: a cosine classifier over per-class mean ``f_m``)
reads the task. Stored: both module sets, the
fusion and the class statistics, the same size after every task.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from retain.data.stream import Task
from retain.errors import RetainError
from retain.methods.base import Batch, Batches, ContinualMethod, register
from retain.methods.heads import Prototypes
from retain.methods.ntk_cl import losses
from retain.methods.ntk_cl.config import NTKCLOptions
from retain.methods.ntk_cl.modules import Blocks, Switch, encoder_layers, inject, sequence_length


class Fusion(nn.Module):
    """Attention of the prompt view's query over the two views (keys ``W_k f``, values the
    views themselves); the query starts at zero, so ``f_m`` starts as ``(f_c + f_p) / 2``.
    ``width=0``: that mean, with nothing to learn."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.query = nn.Linear(dim, width, bias=False) if width else None
        self.key = nn.Linear(dim, width, bias=False) if width else None
        if self.query is not None:
            nn.init.zeros_(self.query.weight)

    def forward(self, fc: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
        if self.query is None:
            return (fc + fp) / 2
        views = torch.stack([fc, fp], 1)  # [B, 2, D]
        scores = (self.key(views) @ self.query(fp)[:, :, None]).squeeze(-1)
        weights = (scores / math.sqrt(self.query.out_features)).softmax(-1)
        return (weights[..., None] * views).sum(1)


@register
class NTKCL(ContinualMethod):
    name = "ntk-cl"
    config_class = NTKCLOptions
    config: NTKCLOptions

    def merged_model(self) -> nn.Module:
        raise RetainError("ntk-cl's modules sit beside the encoder (three views fused) and do "
                          "not fold into its weights: use `retain predict` or retain.load(DIR)"
                          ".predict instead of exporting")

    def prepare(self, backbone, stream) -> None:
        model = self.model
        if self.backbone.modality == "causal-lm":
            raise RetainError(f"ntk-cl needs a BERT- or ViT-style encoder; '{self.backbone.name}' "
                              "is a decoder: use --backbone minilm, tiny-bert or tiny-vit")
        model.requires_grad_(False)
        cfg, mc = self.config, model.config
        n = len(encoder_layers(model))
        self.current = Blocks(n, mc.hidden_size, sequence_length(model),
                              mc.num_attention_heads, cfg.adapter_dim, cfg.adapter_scale,
                              cfg.prompts)
        self.averaged = copy.deepcopy(self.current).requires_grad_(False)
        self.fusion = Fusion(2 * mc.hidden_size,
                             cfg.fusion_dim if cfg.fusion == "attention" else 0)
        self.register_buffer("tasks_done", torch.zeros((), dtype=torch.long))
        self.switch = Switch()
        self.handles = inject(model, self.switch)
        self.start: dict[str, torch.Tensor] = {}
        self.feature_width = 2 * backbone.hidden_size  # the two halves, fused
        self.config.check_head(self.run_head.name)  # planned runs were refused already
        # old-class prototypes of f_m for the contrastive and orthogonality terms: the head's own
        # when it keeps them (the prototypes head), else a copy of that statistic kept here
        self.anchors = None if self.run_head.name == "prototypes" else Prototypes(
            self.feature_width, stream.num_classes)

    def prototypes(self) -> Prototypes:
        return self.head if self.anchors is None else self.anchors

    def trainable(self) -> dict[str, nn.Parameter]:
        return {f"current.{k}": v for k, v in self.current.named_parameters()} | {
            f"fusion.{k}": v for k, v in self.fusion.named_parameters()}

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        groups = {"backbone": list(self.trainable().values())}
        head = [p for p in self.head.parameters() if p.requires_grad]
        return groups | ({"head": head} if head else {})

    # --- the passes ----------------------------------------------------------------------------
    def pooled(self, batch: Batch, blocks: Blocks | None, family: str = "") -> torch.Tensor:
        return self.passes(batch, [(blocks, family)])[0]

    def passes(self, batch: Batch, segments: list[tuple[Blocks | None, str]]
               ) -> list[torch.Tensor]:
        """The pooled output of each ``(blocks, family)`` pass over ``batch``, all in one
        forward over the batch stacked once per pass (fewer, larger products than one
        forward per pass; each row attends only within itself, so the passes stay apart)."""
        n = len(segments)
        stacked = batch if n == 1 else {
            k: v.repeat(n, *(1,) * (v.dim() - 1)) for k, v in self.backbone.inputs(batch).items()}
        self.switch.segments, self.switch.mask = segments, stacked.get("attention_mask")
        try:
            return list(self.backbone.pooled(stacked, self.model).chunk(n))
        finally:
            self.switch.segments, self.switch.mask = [], None
            self.switch.stash.clear()

    def views(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f_c, f_p, f_m)``; the averaged modules' passes carry no gradient. Without a
        gradient anywhere (evaluation, statistics) the four passes share one forward; in
        training, the two averaged ones share one and the two current ones another."""
        current = [(self.current, "adapter"), (self.current, "prompt")]
        # before the first task ends the averaged modules are inert: the encoder alone
        averaged = ([(None, "")] if int(self.tasks_done) == 0 else
                    [(self.averaged, "adapter"), (self.averaged, "prompt")])
        if torch.is_grad_enabled():
            with torch.no_grad():
                old = self.passes(batch, averaged)
            new = self.passes(batch, current)
        else:
            *old, cc, cp = self.passes(batch, averaged + current)
            new = [cc, cp]
        ac, ap = old * 2 if len(old) == 1 else old
        fc = torch.cat([ac, new[0]], -1)
        fp = torch.cat([ap, new[1]], -1)
        return fc, fp, self.fusion(fc, fp)

    def features(self, batch: Batch) -> torch.Tensor:
        return self.views(batch)[2]

    def predict(self, batch: Batch, task_id: int | None = None) -> torch.Tensor:
        """``inference=halves``: the authors' scoring, ``w_a cos(f_a, P_a) + w_c cos(f_c, P_c)``
        over the averaged (``a``) and current (``c``) halves of ``f_m`` and of each class mean."""
        if self.config.inference == "whole":
            return super().predict(batch, task_id)
        f, means = self.features(batch).float(), self.head.means
        d = f.shape[-1] // 2
        logits = sum(w * F.normalize(f[:, part], dim=-1) @ F.normalize(means[:, part], dim=-1).T
                     for w, part in zip(self.config.half_weights, (slice(0, d), slice(d, None)),
                                        strict=True))
        return logits.masked_fill(self.head.counts == 0, float("-inf"))

    def represent(self, batch: Batch) -> torch.Tensor:
        if self.config.retention_view == "bypassed":
            return self.pooled(batch, None)
        passes = self.passes(batch, [(blocks, family) for blocks in (self.averaged, self.current)
                                     for family in ("adapter", "prompt")])
        return torch.stack(passes).mean(0)

    # --- the lifecycle -------------------------------------------------------------------------
    def begin_task(self, task: Task, batches: Batches) -> None:
        super().begin_task(task, batches)
        self.start = {k: v.detach().clone() for k, v in self.trainable().items()}
        seen = self.prototypes().counts > 0
        self.old_labels = seen.nonzero().flatten()
        self.old = self.prototypes().means[seen].clone()
        self.basis = (losses.prototype_basis(self.old, self.config.orth_rank)
                      if len(self.old) else None)

    def loss(self, batch: Batch) -> torch.Tensor:
        cfg = self.config
        fc, fp, fm = self.views(batch)
        labels = batch["labels"]
        total = sum(self.head.loss(f, labels) for f in (fc, fp, fm))
        if len(self.old) or cfg.official_first_task:
            old, old_labels = self.old.to(fm.device), self.old_labels.to(fm.device)
            if cfg.official_losses:
                if len(old) > len(fm):  # their code samples at most a batch of prototypes
                    pick = torch.randperm(len(old), device=old.device)[:len(fm)]
                    old, old_labels = old[pick], old_labels[pick]
                nce = losses.official_contrast(fm, labels, old, old_labels, cfg.temperature)
                # first task: their classifier is all zero, its SVD gives arbitrary directions
                span = self.old if len(self.old) else self.old.new_zeros(1, fm.shape[-1])
                orth = losses.official_orthogonality([fc, fp], span.to(fm.device),
                                                     cfg.orth_rank)
            else:
                nce = losses.contrast(fm, labels, old, old_labels, cfg.temperature)
                orth = losses.orthogonality([fc, fp, fm], self.basis.to(fm.device))
            total = total + cfg.w_nce * nce + cfg.w_orth * orth
        if self.start:
            total = total + cfg.w_reg * losses.pull(
                self.trainable(), {k: v.to(fm.device) for k, v in self.start.items()},
                weights_only=cfg.official_losses)
        return total

    @torch.no_grad()
    def average(self) -> None:
        """``avg <- t/(t+1) avg + 1/(t+1) current`` after task ``t`` (from 0)."""
        t = int(self.tasks_done)
        for a, c in zip(self.averaged.parameters(), self.current.parameters(), strict=True):
            a.mul_(t / (t + 1)).add_(c, alpha=1 / (t + 1))
        self.tasks_done += 1

    def end_task(self, task: Task, batches: Batches) -> None:
        self.average()
        with torch.no_grad():  # four passes per item: featurise the task once for both readers
            cached = [(batch, self.features(batch)) for batch in batches()]
        by_id = {id(batch): f for batch, f in cached}

        def replay():
            return [batch for batch, _ in cached]

        self.head.end_task(task, replay, lambda batch: by_id[id(batch)])
        if self.anchors is not None:
            self.anchors.absorb(task, replay, lambda batch: by_id[id(batch)])
        self.start = {}
