"""The protocol every continual method implements, its config base class, and the registry.

One run, as the engine drives it (``setup`` and the loop are the engine's; the names in the
right column are the protocol, and nothing else is)::

    method.setup(backbone, stream)        # once: prepare(backbone, stream), then the head
    for task in stream:
        method.begin_task(task, batches)  # may read the task's training data (no labels needed)
        for batch in training data:       # the task's (all seen tasks' at the last task for a
            loss = method(batch)          # method registered continual=False); the engine's
                                          # optimiser steps trainable_parameters()
        method.end_task(task, batches)    # merging, basis updates, the head's statistics
        method.predict(batch, task_id)    # scores for the task kind (class logits, token logits)
    method.represent(batch)               # what retention compares with the untouched backbone

The protocol, all of it (the base class implements each; a method overrides what it needs):

====================  ========================================================================
``config_class``      the method's options (a dataclass whose fields carry a help text)
``prepare``           adapt ``self.model`` in place: inject adapters (keep the tuner in
                      ``self.tuner``), set ``requires_grad``, build the method's own modules;
                      may set ``self.feature_width`` (the head's input width)
``begin_task``        before training on a task (the head's, then the method's)
``trainable_parameters``  what a step optimises: ``{"backbone": [...], "head": [...]}``
``loss``              a batch's training loss (default: the task kind's)
``end_task``          after training on a task: the head's statistics pass is the one pass
                      over the task's data (a method's own statistics ride on it, as
                      InfLoRA's do); ``begin_task`` may make one more, before training
``features``          pooled features of a batch (what the head reads)
``predict``           class logits or next-token logits (default: the task kind's)
``represent``         what retention compares with the untouched backbone
``state``             the structure a checkpoint needs beyond tensors (JSON)
``load_state``        rebuild that structure before the tensors load
``model_tensors``     the tensors of ``self.model`` the method changed or added: with the
                      method's own modules, exactly what a checkpoint holds, what
                      ``stored_parameters`` counts and (with ``merged_model``) what is exported
``merged_model``      a plain ``transformers`` model with the method's change folded in
``lora_per_task``     what one LoRA of the method's rank on its layers stores (the storage
                      reference), or None
====================  ========================================================================

What a method *is* (description, default head and learning rate, the task kinds it serves,
whether it is continual, predicts with a task id, takes weight decay, whether its ``peft``
adapter holds its whole change, which stored tensors are recomputed from the weights) is its
:class:`~retain.catalogue.MethodInfo`, given once when it is registered (``register``), so that
``retain list`` and the option checks read it without importing torch. A class that defines a
name of the old protocol or a near-miss of a hook's name is refused when it is defined.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from retain.backbones import Backbone
from retain.catalogue import METHODS, MethodInfo
from retain.data.stream import Stream, Task
from retain.errors import RetainError
from retain.methods.heads import RunHead
from retain.options import Options

Batch = dict[str, torch.Tensor]
Batches = Callable[[], Iterable[Batch]]


@dataclass
class MethodConfig(Options):
    """Base of every method's config: a dataclass whose fields carry ``metadata['help']``."""

    def check_head(self, head: str) -> None:
        """Refuse options that the run's head (its resolved name) cannot serve; called when
        the run is planned, before any model loads."""


HOOKS = ("config_class", "prepare", "begin_task", "trainable_parameters", "loss", "end_task",
         "features", "predict", "represent", "state", "load_state", "model_tensors",
         "merged_model", "lora_per_task")
# names a method may not define: the engine's own, and what the registration now carries
RESERVED = ("setup", "forward", "training_tasks", "stored_tensors", "load_stored",
            "stored_parameters", "peft_adapter", "info", "wrap", "feature_dim", "description",
            "default_head", "default_lr", "kind_lr", "kind_options", "continual",
            "task_aware_prediction", "kinds",
            "kinds_reason", "no_weight_decay", "adapter_holds_all", "recomputed_tensors")


class ContinualMethod(nn.Module):
    """A backbone (adapted in place), a head, and the protocol (see the module docstring)."""

    name: ClassVar[str] = ""
    info: ClassVar[MethodInfo]  # set by ``register``
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in cls.__dict__:
            if attr in RESERVED:
                raise TypeError(f"{cls.__name__}.{attr}: not part of the method protocol "
                                f"({', '.join(HOOKS)}); what a method is goes in its "
                                "MethodInfo (register)")
            if attr.startswith("_") or attr in HOOKS or attr == "name":
                continue
            near = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.8)
            if near:
                raise TypeError(f"{cls.__name__}.{attr}: a misspelt hook? the protocol has "
                                f"'{near[0]}'")
        for f in dataclasses.fields(cls.config_class):
            if not f.metadata.get("help"):
                raise TypeError(f"{cls.config_class.__name__}.{f.name}: every option needs "
                                "metadata={'help': ...}")

    def __init__(self, config: MethodConfig, head: RunHead):
        super().__init__()
        self.config = config
        self.run_head = head  # which head, its options and rate (the plan's)
        self.tuner = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "tuner":  # a peft tuner wraps self.model: not a second registered module
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- the engine's (not hooks) ----------------------------------------------------------
    def setup(self, backbone: Backbone, stream: Stream) -> None:
        """Once, before task 1 (and when a run is rebuilt): ``prepare``, then the head."""
        self.backbone = backbone  # plain attribute: ``self.model`` is the registered module
        self.num_tasks = len(stream)
        self.kind = stream.kind
        self.model = backbone.model  # the one model object of the run
        self.feature_width = backbone.feature_size
        self.prepare(backbone, stream)
        self.head = self.run_head.build(self.feature_width, stream.num_classes)

    def training_tasks(self, task: Task, seen: list[Task]) -> list[Task]:
        """Tasks whose training data this task trains on: the task alone, or, for a method
        registered ``continual=False``, every seen task at the last task and none before."""
        if self.info.continual:
            return [task]
        return list(seen) if task.index == self.num_tasks - 1 else []

    # --- the protocol -----------------------------------------------------------------------
    def prepare(self, backbone: Backbone, stream: Stream) -> None:
        """Adapt ``self.model`` in place (adapters, freezing) and build the method's own
        modules; the head is built after it, ``self.feature_width`` wide."""

    def begin_task(self, task: Task, batches: Batches) -> None:
        self.head.begin_task(task)

    def features(self, batch: Batch) -> torch.Tensor:
        return self.backbone.features(batch, self.model)

    def loss(self, batch: Batch) -> torch.Tensor:
        """The kind's loss: the head's on the features, or the model's own next-token loss."""
        return self.kind.loss(self, batch)

    def forward(self, batch: Batch) -> torch.Tensor:  # what accelerate / DDP wrap: the engine's
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
        methods registered ``task_aware_prediction`` use ``task_id``. Language modelling:
        next-token logits ``[B, L, V]``."""
        return self.kind.predict(self, batch)

    def represent(self, batch: Batch) -> torch.Tensor:
        """What retention compares with the untouched backbone: next-token logits of a causal
        LM, the pooled last hidden state of an encoder (whatever layers the head reads). A
        method whose modules sit beside the backbone overrides this one hook."""
        if self.backbone.modality == "causal-lm":
            return self.backbone.token_logits(batch, self.model)
        return self.backbone.pooled(batch, self.model)

    # --- checkpoints and costs -------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"head": self.head.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.head.load_state(state["head"])

    def model_tensors(self) -> dict[str, torch.Tensor | Rows]:
        """The tensors of ``self.model`` this method changed or added (names as in
        ``self.model.state_dict()``), or the changed rows of one (:class:`Rows`); the rest is
        rebuilt from the untouched backbone."""
        return {}

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """Exactly what a checkpoint holds (names as in ``self.state_dict()``): the method's own
        modules (head, statistics) and the model tensors it declares (:class:`Rows` as
        ``<name>.rows``)."""
        out = {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        for k, v in self.model_tensors().items():
            if isinstance(v, Rows):
                out[f"model.{k}.rows"] = v.values
            else:
                out[f"model.{k}"] = v
        return out

    def load_stored(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put a checkpoint's tensors (the names of ``stored_tensors()``) back in place (after
        ``load_state``, which says which rows a :class:`Rows` entry holds)."""
        tensors = dict(tensors)
        sd = self.model.state_dict()
        with torch.no_grad():
            for k, v in self.model_tensors().items():
                if isinstance(v, Rows):
                    index = torch.as_tensor(v.index, device=sd[k].device)
                    sd[k].index_copy_(0, index, tensors.pop(f"model.{k}.rows").to(sd[k]))
        self.load_state_dict(tensors, strict=False)

    def stored_parameters(self) -> int:
        """Numbers stored beyond the untouched backbone: every stored tensor once (tied tensors
        count once), except those the registration names ``recomputed_tensors``; rows of a
        weight (:class:`Rows`) count with one index each."""
        rows = sum(len(r.index) for r in self.model_tensors().values() if isinstance(r, Rows))
        return rows + count_unique(t for n, t in self.stored_tensors().items()
                                   if not any(part in n for part in self.info.recomputed_tensors))

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
        if not self.info.adapter_holds_all or self.tuner is None:
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


class Rows(NamedTuple):
    """Some rows of a weight, as ``model_tensors`` declares them: ``values[i]`` is row
    ``index[i]`` (stored with its index; the index itself lives in the method's state)."""

    values: torch.Tensor
    index: list[int]


REGISTRY: dict[str, type[ContinualMethod]] = {}


def register(cls: type[ContinualMethod] | None = None, *, info: MethodInfo | None = None):
    """Register a method class under ``cls.name`` (as a decorator, or ``register(cls,
    info=MethodInfo(...))`` in one call). Built-in methods take their entry in
    ``retain.catalogue.METHODS``; any other method gives ``info``, which adds it there, so that
    it appears in ``retain list``, ``--methods all`` and the every-method tests."""

    def add(cls: type[ContinualMethod]) -> type[ContinualMethod]:
        if not cls.name:
            raise TypeError(f"{cls.__name__}: a registered method needs a name")
        if info is not None:
            METHODS[cls.name] = dataclasses.replace(info, module=info.module or cls.__module__)
        elif cls.name not in METHODS:
            raise TypeError(f"{cls.__name__} ('{cls.name}') has no entry in retain.catalogue."
                            "METHODS: register(cls, info=MethodInfo(...))")
        cls.info = METHODS[cls.name]
        REGISTRY[cls.name] = cls
        return cls
    return add if cls is None else add(cls)


def get_method_class(name: str) -> type[ContinualMethod]:
    if name not in REGISTRY and name in METHODS:
        import importlib

        importlib.import_module(METHODS[name].module)  # registers the class
    if name not in REGISTRY:
        raise RetainError(f"unknown method '{name}': choose one of {', '.join(REGISTRY)} "
                          "(`retain list`)")
    return REGISTRY[name]
