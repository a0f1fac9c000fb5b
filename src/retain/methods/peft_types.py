"""Registering a method of this package as a ``peft`` method type, so that ``get_peft_model``,
``save_pretrained`` and ``PeftModel.from_pretrained`` take its config. ``peft`` has no other
extension point than its ``PeftType`` enum and ``register_peft_method``."""

from __future__ import annotations

from peft.utils import PeftType


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
