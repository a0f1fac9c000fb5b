"""Function-preserving growth for a stream of tasks ("grow, don't overwrite").

Before each task the chosen blocks' MLPs are widened by copies of their units
(:mod:`retain.methods.grow.layer`), so the model computes the same function; only the new copy
trains (G-Freeze), or the new copy and the named modules of the blocks grown for this task
(G-Train). Earlier copies and the pretrained weights get no gradient; growing again from the
latest copy divides that copy's down-projection in place (the function is unchanged). Stored: the
copies (and G-Train's modules of every block grown so far); the growths are recorded in the
method's state and replayed when a run is resumed or reloaded.
"""

from __future__ import annotations

import copy as copying

import torch
from torch import nn

from retain.data.stream import Task
from retain.errors import RetainError
from retain.methods.base import Batches, ContinualMethod, register
from retain.methods.grow.config import GrowOptions
from retain.methods.grow.layer import MLPSite, mlp_sites


@register
class Grow(ContinualMethod):
    name = "grow"
    config_class = GrowOptions
    config: GrowOptions

    def prepare(self, backbone, stream) -> None:
        self.model.requires_grad_(False)
        self.sites = mlp_sites(self.model)
        cfg = self.config
        bad = [i for i in cfg.layers if not 0 <= i < len(self.sites)]
        if bad:
            raise RetainError(f"grow layers {bad} out of range: the backbone has "
                              f"{len(self.sites)} blocks (0..{len(self.sites) - 1})")
        self.growths: list[list[int]] = []  # [task, block, width of the new copy]
        self._also_trained(self.sites)  # refuses names that match nothing or only the MLP

    def _also_trained(self, sites: list[MLPSite]) -> list[nn.Parameter]:
        """G-Train's extra parameters in ``sites``: those of the blocks' modules whose names
        (inside the block) contain one of ``also_train``; refused when they are only the MLP
        that grows."""
        parts = self.config.also_train
        if not parts:
            return []
        found: dict[tuple[int, str], nn.Parameter] = {}
        for site in sites:
            for local, p in site.block.named_parameters():
                if any(part in local for part in parts):
                    found[site.index, local] = p
        if not found:
            raise RetainError(f"grow also_train {parts} matches no parameter of the blocks; "
                              "try 'attention' (BERT, ViT) or 'self_attn' (Llama)")
        mlp = tuple(p for s in self.sites[:1] for p in (s.up, s.down, s.gate) if p)
        if all(local.startswith(mlp) for _, local in found):
            raise RetainError("grow also_train names only the MLP that grows: the pretrained "
                              "units and their copy would train from a symmetric start and get "
                              "identical gradients for good; add other modules or drop it")
        return list(found.values())

    def grown(self) -> list[MLPSite]:
        """The blocks grown so far, in order."""
        return [self.sites[i] for i in sorted({block for _, block, _ in self.growths})]

    # --- which blocks grow ---------------------------------------------------------------------
    def chosen(self, batches: Batches) -> list[MLPSite]:
        cfg = self.config
        if cfg.layers:
            return [self.sites[i] for i in sorted(set(cfg.layers))]
        n = len(self.sites)
        k = max(1, round(cfg.fraction * n))
        if cfg.select == "all":
            return list(self.sites)
        if cfg.select == "spread":
            return [self.sites[i] for i in sorted({round(j * (n - 1) / max(k - 1, 1))
                                                   for j in range(k)})]
        scores = self.gradient_scores(batches)
        top = sorted(range(n), key=lambda i: -scores[i])[:k]
        return [self.sites[i] for i in sorted(top)]

    def gradient_scores(self, batches: Batches) -> list[float]:
        """Per block, ``||dL/dW_down|| / ||W_down||`` of the MLP's pretrained down-projection,
        summed over the task's first batches (the model's loss, or the head's on the task's
        classes)."""
        downs = [s.down_weight() for s in self.sites]
        for w in downs:
            w.requires_grad_(True)
        grads = [torch.zeros((), device=w.device) for w in downs]
        try:
            with torch.enable_grad():
                for i, batch in enumerate(batches()):
                    if i == self.config.gradient_batches:
                        break
                    gs = torch.autograd.grad(self.loss(batch), downs, allow_unused=True)
                    grads = [a + (g.float().norm() if g is not None else 0.0)
                             for a, g in zip(grads, gs, strict=True)]
        finally:
            for w in downs:
                w.requires_grad_(False)
        return [float(g) / max(float(w.float().norm()), 1e-12)
                for g, w in zip(grads, downs, strict=True)]

    # --- the lifecycle -------------------------------------------------------------------------
    def begin_task(self, task: Task, batches: Batches) -> None:
        super().begin_task(task, batches)
        if task.index and not self.config.each_task:
            return
        for site in self.sites:  # earlier copies and G-Train modules get no gradient
            for copy in site.copies():
                copy.requires_grad_(False)
        for p in self._also_trained(self.sites):
            p.requires_grad_(False)
        chosen = self.chosen(batches)
        for site in chosen:
            self._grow(task.index, site)
        for p in self._also_trained(chosen):  # G-Train: the grown blocks' named modules
            p.requires_grad_(True)

    def _grow(self, task: int, site: MLPSite) -> None:
        width = site.grow(self.config.factor, self.config.source)
        self.growths.append([task, site.index, width])

    def model_tensors(self) -> dict[str, torch.Tensor]:
        state = self.model.state_dict()
        extra = {id(p) for p in self._also_trained(self.grown())}
        names = {n for n, p in self.model.named_parameters()
                 if ".copies." in n or id(p) in extra}
        return {k: v for k, v in state.items() if k in names}

    def merged_model(self) -> nn.Module:
        """A plain model whose every MLP is as wide as the widest grown one (narrower blocks
        padded with zero units): ``intermediate_size`` in its config says the width."""
        model = copying.deepcopy(self.model)
        sites = mlp_sites(model)
        width = max(sum(site.widths()) for site in sites)
        for site in sites:
            site.merge(width)
        model.config.intermediate_size = width
        return model

    def state(self) -> dict:
        return {**super().state(), "growths": self.growths}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        for task, index, width in state["growths"]:  # replay in order: the same structure,
            self._grow(task, self.sites[index])        # then the stored copies load on top
            if self.growths[-1][2] != width:
                raise RetainError(f"grow checkpoint: block {index} regrew to width "
                                  f"{self.growths[-1][2]}, not the recorded {width}; it was "
                                  "written with other options")
        for site in self.sites:  # a resumed run continues at the next task's begin_task
            for copy in site.copies():
                copy.requires_grad_(not self.config.each_task)
        for p in self._also_trained(self.grown()):
            p.requires_grad_(not self.config.each_task)

    def widths(self) -> dict[int, list[int]]:
        """Per block, the pretrained hidden width followed by each copy's width."""
        return {s.index: s.widths() for s in self.sites}
