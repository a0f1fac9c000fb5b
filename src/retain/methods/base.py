"""The lifecycle every continual method implements, its config base class, and the registry.

One run, as the engine drives it::

    method.prepare(backbone, stream)      # once: adapt the backbone's model in place, the head
    for task in stream:
        method.begin_task(task, batches)  # may read the task's training data (no labels needed)
        for batch in training data:       # of method.training_tasks(task, seen)
            loss = method(batch)          # == method.loss(batch); the engine's optimiser steps
                                          # method.trainable_parameters()
        method.end_task(task, batches)    # merging, basis updates, prototypes
        method.predict(batch, task_id)    # scores for the task kind (class logits, token logits)
    method.represent(batch)               # what retention compares with the untouched backbone

A method keeps one model object for the whole run (``self.model``, the backbone's own model):
adapters are injected into it and merged inside it with ``peft`` tuners, never rebound.
``model_tensors()`` declares which of its tensors the method changes or adds; with the method's
own modules (head, memories) they are exactly what a checkpoint holds (``stored_tensors()``) and
what ``stored_parameters()`` counts. ``state()`` / ``load_state()`` carry the structure a
checkpoint needs beyond tensors.

A new method must write ``wrap`` (or ``prepare``) and ``model_tensors``; it may write
``begin_task``, ``end_task``, ``training_tasks``, ``loss``, ``predict``, ``represent``,
``state`` / ``load_state`` and ``stored_parameters``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from retain.backbones import Backbone
from retain.catalogue import METHODS
from retain.data.stream import Stream, Task
from retain.errors import RetainError
from retain.methods.heads import make_head
from retain.options import Options

Batch = dict[str, torch.Tensor]
Batches = Callable[[], Iterable[Batch]]


@dataclass
class MethodConfig(Options):
    """Base of every method's config: a dataclass whose fields carry ``metadata['help']``."""


class ContinualMethod(nn.Module):
    """A backbone (adapted in place), a head, and the lifecycle hooks."""

    name: ClassVar[str] = ""
    # description, default_head, kinds, kinds_reason: from the method's entry in
    # retain.catalogue.METHODS (listed without importing torch)
    description: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    default_head: ClassVar[str] = "growing"
    default_lr: ClassVar[float] = 5e-4
    continual: ClassVar[bool] = True  # False: only the final row is meaningful (joint)
    task_aware_prediction: ClassVar[bool] = False  # predict() uses task_id when given
    kinds: ClassVar[tuple[str, ...]] = ("classification", "lm")  # task kinds it serves
    kinds_reason: ClassVar[str] = ""  # why not the others (for the error message)
    no_weight_decay: ClassVar[str] = ""  # why --weight-decay must stay 0 (empty: allowed)
    # the active peft adapter over the pretrained weights holds the method's whole change (it
    # is exported as peft saves it); False where updates are merged into W or sit elsewhere
    adapter_holds_all: ClassVar[bool] = False
    # parts of tensor names recomputed from the pretrained weights without data: checkpoints
    # keep them (exact resume), ``stored_parameters`` does not count them
    recomputed_tensors: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        info = METHODS.get(cls.__dict__.get("name", ""))
        if info is not None:
            cls.description, cls.default_head = info.description, info.default_head
            cls.kinds, cls.kinds_reason = info.kinds, info.kinds_reason

    def __init__(self, config: MethodConfig, head: str,
                 head_options: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.head_scheme = head
        self.head_options = head_options or {}
        self.tuner = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "tuner":  # a peft tuner wraps self.model: not a second registered module
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- lifecycle -------------------------------------------------------------------------
    def prepare(self, backbone: Backbone, stream: Stream) -> None:
        """Adapt the backbone's model in place (adapters, freezing) and build the head; once,
        before task 1."""
        self.backbone = backbone  # plain attribute: ``self.model`` is the registered module
        self.num_tasks = len(stream)
        self.kind = stream.kind
        self.model = backbone.model  # the one model object of the run
        self.wrap(self.model)
        self.head = make_head(self.head_scheme if stream.kind == "classification" else "none",
                              self.feature_dim(backbone.hidden_size), stream.num_classes,
                              self.head_options)

    def feature_dim(self, hidden_size: int) -> int:
        """Width of ``features()``: the backbone's (methods that widen it override this)."""
        return hidden_size

    def wrap(self, model: nn.Module) -> None:
        """Adapt ``model`` in place: inject adapters (keep the tuner in ``self.tuner``), set
        ``requires_grad``."""

    def begin_task(self, task: Task, batches: Batches) -> None:
        self.head.begin_task(task)

    def training_tasks(self, task: Task, seen: list[Task]) -> list[Task]:
        """Tasks whose training data this task trains on (continual methods: the task alone)."""
        return [task]

    def features(self, batch: Batch) -> torch.Tensor:
        return self.backbone.features(batch, self.model)

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.kind == "lm":  # the model's own next-token loss (padding labelled -100)
            return self.model(**self.backbone.inputs(batch), labels=batch["labels"]).loss
        return self.head.loss(self.features(batch), batch["labels"])

    def forward(self, batch: Batch) -> torch.Tensor:  # what accelerate / DDP wrap
        return self.loss(batch)

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """What a training step optimises, as ``{"backbone": [...], "head": [...]}``; the engine
        owns the optimiser and gives each group its learning rate (``lr``, ``head_lr``)."""
        backbone = [p for p in self.model.parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad]
        if not backbone and not self.head.learns_alone:
            return {}
        return {k: v for k, v in (("backbone", backbone), ("head", head)) if v}

    def end_task(self, task: Task, batches: Batches) -> None:
        self.head.end_task(task, batches, self.features)

    def predict(self, batch: Batch, task_id: int | None = None) -> torch.Tensor:
        """Classification: logits over every class of the stream (``-inf`` for unseen ones);
        methods that set ``task_aware_prediction`` use ``task_id``. Language modelling:
        next-token logits ``[B, L, V]``."""
        if self.kind == "lm":
            return self.backbone.token_logits(batch, self.model)
        return self.head.logits(self.features(batch))

    def represent(self, batch: Batch) -> torch.Tensor:
        """What retention compares with the untouched backbone: next-token logits of a causal
        LM, pooled features of an encoder. A method whose modules sit beside the backbone
        overrides this one hook."""
        if self.backbone.modality == "causal-lm":
            return self.backbone.token_logits(batch, self.model)
        return self.features(batch)

    # --- checkpoints and costs -------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"head": self.head.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.head.load_state(state["head"])

    def model_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of ``self.model`` this method changed or added (names as in
        ``self.model.state_dict()``); the rest is rebuilt from the untouched backbone."""
        return {}

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """Exactly what a checkpoint holds (names as in ``self.state_dict()``): the method's own
        modules (head, statistics) and the model tensors it declares."""
        out = {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        out.update({f"model.{k}": v for k, v in self.model_tensors().items()})
        return out

    def load_stored(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put a checkpoint's tensors (the names of ``stored_tensors()``) back in place."""
        self.load_state_dict(tensors, strict=False)

    def stored_parameters(self) -> int:
        """Numbers stored beyond the untouched backbone: every stored tensor once (tied tensors
        count once), except those named in ``recomputed_tensors``."""
        return count_unique(t for n, t in self.stored_tensors().items()
                            if not any(part in n for part in self.recomputed_tensors))

    # --- leaving retain ---------------------------------------------------------------------
    def merged_model(self) -> nn.Module:
        """A copy of the adapted model as a plain ``transformers`` model, every ``peft`` layer
        merged into its weight by ``peft`` (``merge_and_unload``); the run's own model is left
        as it is. Methods whose modules do not fold into the backbone override this."""
        if self.tuner is None:
            return copy.deepcopy(self.model)
        return copy.deepcopy(self.tuner).merge_and_unload()  # the tuner holds the model

    def peft_adapter(self) -> tuple[Any, dict[str, torch.Tensor]] | None:
        """The active adapter's ``peft`` config and tensors, renamed to the ``default``
        adapter, when it holds the whole change (``adapter_holds_all``); else None."""
        if not self.adapter_holds_all or self.tuner is None:
            return None
        name = self.tuner.active_adapters[-1]
        part = re.compile(rf"\.{re.escape(name)}(?=\.|$)")  # the adapter's name in a key
        tensors = {part.sub(".default", k): v for k, v in self.model.state_dict().items()
                   if self.tuner.prefix in k and part.search(k)}
        return self.tuner.peft_config[name], tensors

    def lora_per_task(self) -> int | None:
        """What one LoRA of the method's rank on the method's layers stores: the reference of
        ``stored_ratio_vs_lora_per_task`` (None: not an adapter method)."""
        return None


def lora_numbers(model: nn.Module, layers: list[str], rank: int) -> int:
    """Numbers of a rank-``rank`` LoRA (``A``: ``r x d_in``, ``B``: ``d_out x r``) on the named
    linear layers (or the peft layers wrapping them)."""
    total = 0
    for name in layers:
        layer = model.get_submodule(name)
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        total += rank * (base.in_features + base.out_features)
    return total


def count_unique(tensors: Iterable[torch.Tensor]) -> int:
    """Total size of tensors, each storage counted once (tied embeddings)."""
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape)
        if key not in seen:
            seen.add(key)
            total += t.numel()
    return total


REGISTRY: dict[str, type[ContinualMethod]] = {}


def register(cls: type[ContinualMethod]) -> type[ContinualMethod]:
    REGISTRY[cls.name] = cls
    return cls


def get_method_class(name: str) -> type[ContinualMethod]:
    if name not in REGISTRY and name in METHODS:
        import importlib

        importlib.import_module(METHODS[name].module)  # registers the class
    if name not in REGISTRY:
        raise RetainError(f"unknown method '{name}': choose one of {', '.join(REGISTRY)} "
                          "(`retain list`)")
    return REGISTRY[name]
