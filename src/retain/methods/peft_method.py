"""What the methods of this package that are also ``peft`` methods (PLATE, Share) share: the
config fields every ``peft`` config carries, the tuner that injects their layers, the layer
behaviour around merging and loading, and the registration as a ``peft`` method type (``peft``
has no other extension point than its ``PeftType`` enum and ``register_peft_method``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_adapters_to_merge
from peft.utils import PeftType
from torch import nn


@dataclass
class MethodPeftConfig(PeftConfig):
    """The fields every ``peft`` config of this package carries beside its own knobs."""

    peft_type_name: ClassVar[str] = ""
    target_modules: list[str] | str | None = field(default=None, metadata={
        "help": "nn.Linear modules to adapt (name suffixes), or 'all-linear'"})
    exclude_modules: list[str] | str | None = field(default=None, metadata={
        "help": "modules not to adapt (names or a regex)"})
    layers_to_transform: list[int] | int | None = field(default=None, metadata={
        "help": "indices of the layers to adapt (default: all)"})
    layers_pattern: list[str] | str | None = field(default=None, metadata={
        "help": "name of the layer list, used with layers_to_transform"})
    modules_to_save: list[str] | None = field(default=None, metadata={
        "help": "modules outside the adapters to train and save (e.g. a classifier)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType(self.peft_type_name)
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)


class MethodLayer(BaseTunerLayer):
    """Merging, unmerging, the forward around the adapters, and loading adapters whose tensors
    have other shapes than the fresh layer's (they follow the file). A layer class writes
    ``get_delta_weight(adapter)``, ``adapter_output(x, adapter)`` and names its stores in
    ``adapter_layer_names`` / ``other_param_names`` (the first store holds every adapter). The
    ``nn.Linear`` wrapper puts it before ``nn.Module`` (``class X(XLayer, nn.Module)``) so that
    these methods take precedence over ``nn.Module``'s."""

    label: ClassVar[str] = ""

    def _stores(self) -> list[str]:
        return [n for n in (*self.adapter_layer_names, *self.other_param_names)
                if isinstance(getattr(self, n, None), nn.Module)]  # not plain dicts

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._stores():
            store = getattr(self, name)
            for adapter in list(store.keys()):
                saved = state_dict.get(f"{prefix}{name}.{adapter}")
                if saved is not None and saved.shape != store[adapter].shape:
                    new = store[adapter].detach().new_zeros(saved.shape)
                    store[adapter] = (nn.Parameter(new, requires_grad=store[adapter]
                                                   .requires_grad)
                                      if name in self.adapter_layer_names else new)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _has(self, adapter: str) -> bool:
        return adapter in getattr(self, self.adapter_layer_names[0])

    @torch.no_grad()
    def _add_to_weight(self, adapter: str, sign: float) -> None:
        weight = self.get_base_layer().weight
        with torch.autocast(weight.device.type, enabled=False):  # the update as trained
            weight += sign * self.get_delta_weight(adapter).float().to(weight.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        for adapter in check_adapters_to_merge(self, adapter_names):
            if not self._has(adapter):
                continue
            if safe_merge and not torch.isfinite(self.get_delta_weight(adapter)).all():
                raise ValueError(f"NaNs in {self.label} adapter '{adapter}'; not merged")
            self._add_to_weight(adapter, 1.0)
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            if self._has(adapter):
                self._add_to_weight(adapter, -1.0)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for adapter in self.active_adapters:
            if self._has(adapter):
                result = self.adapter_output(result, x, adapter)
        return result

    def adapter_output(self, result: torch.Tensor, x: torch.Tensor, adapter: str
                       ) -> torch.Tensor:
        """``result`` (the base layer's output) with the adapter's update added."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.label.lower() + "." + super().__repr__()


class MethodTuner(BaseTuner):
    """Injects ``layer_cls`` (a ``MethodLayer`` on ``nn.Linear``) into the targeted modules."""

    layer_cls: ClassVar[type] = nn.Module
    target_module_mapping: dict[str, list[str]] = {}

    def _create_and_replace(self, config, adapter_name: str, target: Any, target_name: str,
                            parent: nn.Module, current_key: str, **kwargs: Any) -> None:
        if isinstance(target, self.layer_cls):
            target.update_layer(adapter_name, config)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if not isinstance(base, nn.Linear):
            raise TypeError(f"{self.layer_cls.label} adapts nn.Linear layers; '{current_key}' "
                            f"is a {type(base).__name__}")
        new = self.layer_cls(target, adapter_name, config)
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)
        self._replace_module(parent, target_name, new, target)

    @staticmethod
    def _prepare_adapter_config(peft_config, model_config: dict):
        if peft_config.target_modules is None:
            raise ValueError(f"{type(peft_config).__name__} needs target_modules (names of "
                             "nn.Linear layers, or 'all-linear')")
        return peft_config


def add_peft_type(name: str, config_cls, model_cls, prefix: str) -> None:
    """Make ``name`` a ``peft`` method type (once)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    if name not in PeftType.__members__:
        member = str.__new__(PeftType, name)
        member._name_ = member._value_ = name
        type.__setattr__(PeftType, name, member)
        PeftType._member_map_[name] = member
        PeftType._value2member_map_[name] = member
        PeftType._member_names_.append(name)
    if PeftType[name] not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(name=name.lower(), config_cls=config_cls, model_cls=model_cls,
                             prefix=prefix)
