"""InfLoRA: each task trains ``dW_t = A_t B_t``, ``B_t`` designed orthogonal to old tasks' inputs.

A task's branch is a ``peft`` LoRA adapter whose down-projection (peft's ``lora_A``, our ``B_t``,
``r x d_in``) is designed before the task from the input covariance with the old-task subspace
removed, and frozen; its up-projection (peft's ``lora_B``, our ``A_t``, ``d_out x r``) starts at
zero and is the only adapter tensor that trains. After the task the branch is merged into ``W``
(``merge=True``) or kept and summed with the others (``merge=False``), and the DualGPM memory of
each layer absorbs the directions the task's inputs occupy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, LoraModel
from torch import nn

from retain.data.stream import Task
from retain.dist import all_reduce_sum
from retain.methods.base import Batch, Batches, ContinualMethod, lora_numbers, register
from retain.methods.heads import StatisticsHead
from retain.methods.inflora.config import InfLoRAConfig
from retain.methods.inflora.memory import SubspaceMemory
from retain.methods.peft_glue import check_ranks, make_tuner, peft_targets, unknown_targets


def target_layers(model: nn.Module, suffixes: list[str]) -> list[str]:
    """Full names of the ``nn.Linear`` modules whose names end with one of ``suffixes``."""
    suffixes = peft_targets(suffixes, model)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and any(n == s or n.endswith("." + s) for s in suffixes)]
    if not names:
        raise unknown_targets(model, suffixes)
    return names


def qkv_row_mask(name: str, layer: nn.Linear, parts: list[str]) -> torch.Tensor | None:
    """For a fused qkv layer, 1 on the output rows of ``parts`` and 0 elsewhere."""
    if not name.endswith("qkv") or layer.out_features != 3 * layer.in_features:
        return None
    d = layer.in_features
    mask = torch.zeros(3 * d, 1)
    for part in parts:
        i = "qkv".index(part)
        mask[i * d:(i + 1) * d] = 1.0
    return mask


def add_branch(model: nn.Module, tuner: LoraModel | None, adapter: str,
               designs: dict[str, torch.Tensor], keep: list[str], qkv_parts: list[str]
               ) -> LoraModel:
    """Add a LoRA branch, in place, with frozen, designed ``lora_A`` rows and a zero, trainable
    ``lora_B`` on the layers of ``designs``; ``keep`` names earlier branches that stay active
    (frozen). Returns the tuner that holds the branches."""
    rank = next(iter(designs.values())).shape[0]
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(designs),
                     init_lora_weights=True)  # lora_B = 0; lora_A is overwritten below
    if tuner is None:
        tuner = make_tuner(LoraModel, model, cfg, adapter)
    else:
        tuner.peft_config[adapter] = cfg
        tuner.inject_adapter(model, adapter)
    tuner.set_adapter([*keep, adapter])  # the sum of all active branches
    model.requires_grad_(False)
    for name, design in designs.items():
        layer = model.get_submodule(name)
        down, up = layer.lora_A[adapter], layer.lora_B[adapter]
        with torch.no_grad():
            down.weight.copy_(design.to(down.weight))
        up.weight.requires_grad_(True)
        mask = qkv_row_mask(name, layer.base_layer, qkv_parts)
        if mask is not None:  # only the chosen thirds of a fused qkv output are adapted
            up.weight.register_hook(lambda g, m=mask: g * m.to(g))
    return tuner


@register
class InfLoRA(ContinualMethod):
    name = "inflora"
    config_class = InfLoRAConfig
    config: InfLoRAConfig

    def prepare(self, backbone, stream) -> None:
        self.layers = target_layers(self.model, list(self.config.target_modules))
        check_ranks(self.model, self.layers, {"rank": self.config.rank}, "inflora")
        self.model.requires_grad_(False)
        base = self.model
        self.groups = shared_inputs(base, self.layers, lambda: self.features(
            backbone.batch([stream.kind.probe_item(backbone.modality)], 8)))
        self.memories = nn.ModuleDict({  # one memory per distinct input (key and value share)
            _key(n): SubspaceMemory(base.get_submodule(n).in_features) for n in self.groups})
        self.branches: list[str] = []  # kept branches (merge=False)
        self._mask: torch.Tensor | None = None

    def memory(self, layer: str) -> SubspaceMemory:
        """The memory of the input that ``layer`` reads (shared within its group)."""
        group = next(g for g, members in self.groups.items() if layer in members)
        return self.memories[_key(group)]

    def train(self, mode: bool = True) -> InfLoRA:
        super().train(mode)
        if mode and not self.config.dropout:  # the official code trains in eval mode
            self.model.eval()
        return self

    # --- input statistics ------------------------------------------------------------------
    def features(self, batch: Batch) -> torch.Tensor:
        self._mask = batch.get("attention_mask")
        try:
            return super().features(batch)  # the pooled features: the inputs, not the LM head
        finally:
            self._mask = None

    @contextmanager
    def _collect(self, stop: bool = True) -> Iterator[dict[str, list]]:
        """Accumulate ``sum x x^T`` and the token count at the input of each group of targeted
        layers, over non-padding tokens only. With ``stop``, once every group has its input the
        rest of the forward is skipped (``_Enough``); without, the forward goes on (another
        consumer, the head, reads its features)."""
        stats = {n: [0.0, 0] for n in self.groups}
        base = self.model
        seen: set[str] = set()  # groups that have their input in this forward

        def hook(name):
            def fn(module, args):
                x = args[0]
                if self._mask is not None and x.dim() == 3 and x.shape[:2] == self._mask.shape:
                    x = x[self._mask.bool()]
                x = x.reshape(-1, x.shape[-1]).double()
                stats[name][0] = stats[name][0] + x.T @ x
                stats[name][1] += x.shape[0]
                seen.add(name)
                if stop and len(seen) == len(stats):
                    seen.clear()
                    raise _Enough
            return fn

        handles = [base.get_submodule(n).register_forward_pre_hook(hook(n)) for n in self.groups]
        try:
            yield stats
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def input_covariances(self, batches: Batches) -> dict[str, torch.Tensor]:
        """``C = (1/n) sum x x^T`` over all tokens of the task's training data, one per group of
        layers fed the same input, summed across processes before dividing (two processes give
        the same ``C`` as one)."""
        with self._collect() as stats:
            for batch in batches():
                try:
                    self.features(batch)
                except _Enough:
                    pass
        return self._covariances(stats)

    def _covariances(self, stats: dict[str, list]) -> dict[str, torch.Tensor]:
        covs = {}
        for name, (total, count) in stats.items():
            dim = self.memories[_key(name)].dim
            if not torch.is_tensor(total):  # this process saw no data
                total = torch.zeros(dim, dim, dtype=torch.float64, device=self.memories[
                    _key(name)].basis.device)
            count = all_reduce_sum(torch.tensor([float(count)], dtype=torch.float64,
                                                device=total.device))
            covs[name] = all_reduce_sum(total) / count.clamp_min(1)  # on the model's device
        return covs

    # --- lifecycle -------------------------------------------------------------------------
    def begin_task(self, task: Task, batches: Batches) -> None:
        super().begin_task(task, batches)  # the task's head
        scale = 1 / math.sqrt(3) if self.config.scale_b else 1.0
        designs = {}
        for group, cov in self.input_covariances(batches).items():
            design = self.memories[_key(group)].design(cov, self.config.rank) * scale
            designs.update({n: design for n in self.groups[group]})
        self.tuner = add_branch(self.model, self.tuner, _branch(task.index), designs,
                                self.branches, list(self.config.qkv_parts))

    def end_task(self, task: Task, batches: Batches) -> None:
        # one pass after the task: the head's statistics pass (features) also feeds the input
        # statistics (the hooks read each targeted layer's input in the same forward); a head
        # without a pass (linear heads) leaves them to a pass of their own, after the merge.
        covs = None
        if isinstance(self.head, StatisticsHead):
            with self._collect(stop=False) as stats:
                super().end_task(task, batches)
            covs = self._covariances(stats)
        else:
            super().end_task(task, batches)
        branch = _branch(task.index)
        if self.config.merge:  # W <- W + A_t B_t, formed in fp32 even under mixed precision
            with torch.autocast(next(self.model.parameters()).device.type, enabled=False):
                self.tuner.merge_and_unload()  # in place: self.model is the same object
            self.tuner = None
        else:
            self.branches.append(branch)
            self.model.requires_grad_(False)
        span = self.config.schedule_tasks or self.num_tasks
        threshold = self.config.lambda_b + (1 - self.config.lambda_b) * min(task.index / span, 1)
        for name, cov in (covs if covs is not None else self.input_covariances(batches)).items():
            self.memories[_key(name)].update(cov, threshold, self.config.energy,
                                             self.config.first_task)

    # --- checkpoints -----------------------------------------------------------------------
    def model_tensors(self) -> dict[str, torch.Tensor]:
        """The targeted weights (merged branches changed them) and kept branches' tensors."""
        sd = self.model.state_dict()
        out = {k: v for k, v in sd.items() if "lora_" in k}
        for n in self.layers if self.config.merge else ():
            key = f"{n}.base_layer.weight" if f"{n}.base_layer.weight" in sd else f"{n}.weight"
            out[key] = sd[key]
        return out

    def lora_per_task(self) -> int:
        return lora_numbers(self.model, self.layers, self.config.rank)

    def state(self) -> dict:
        return {**super().state(), "branches": self.branches,
                "memories": {k: m.state() for k, m in self.memories.items()}}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        for key, mem in state["memories"].items():
            self.memories[key].load_state(mem)
        dims = {n: self.model.get_submodule(n).in_features for n in self.layers}
        for branch in state["branches"]:  # rebuilt with placeholder designs, then loaded
            designs = {n: torch.zeros(self.config.rank, d) for n, d in dims.items()}
            self.tuner = add_branch(self.model, self.tuner, branch, designs, self.branches,
                                    list(self.config.qkv_parts))
            self.branches.append(branch)
        if self.branches:
            self.model.requires_grad_(False)


class _Enough(Exception):
    """Raised inside a statistics pass once every targeted input is seen."""


def shared_inputs(model: nn.Module, layers: list[str], forward) -> dict[str, list[str]]:
    """Group ``layers`` by the input they receive in one ``forward()`` (key and value of an
    attention block read the same tensor): the first layer of each group names it. Layers whose
    inputs are merely equal, not the same tensor, stay apart (always correct, just not shared)."""
    inputs: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, args):
            inputs.setdefault(name, args[0])
        return fn

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in layers]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()
            forward()
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    groups: dict[str, list[str]] = {}
    for name in layers:
        leader = next((g for g in groups if name in inputs and inputs.get(g) is inputs[name]),
                      name)
        groups.setdefault(leader, []).append(name)
    return groups



def _key(name: str) -> str:
    return name.replace(".", "/")


def _branch(index: int) -> str:
    return f"task{index}"
