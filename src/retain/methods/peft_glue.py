"""What every method that injects a ``peft`` tuner shares: target names that serve encoders and
decoders alike, and a tuner injected in place with a one-line error for targets that match
nothing. (Custom tuners' base classes are in ``retain.methods.peft_method``.)"""

from __future__ import annotations

from torch import nn

from retain.errors import RetainError


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct trailing names of a model's linear layers, for error messages."""
    names = set()
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            parts = n.split(".")
            names.add(".".join(parts[-2:]) if parts[-1] == "dense" and len(parts) > 1
                      else parts[-1])
    return sorted(names)


def unknown_targets(model: nn.Module, targets: list[str]) -> RetainError:
    """The error for target modules that match no linear layer, listing the ones there are."""
    return RetainError(f"target modules {list(targets)} not found in the backbone; its linear "
                       f"layers are: {', '.join(linear_module_names(model))}")


# the same projection under the names of BERT / ViT and of Llama-style decoders
ALIASES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "attention.output.dense":
           "o_proj", "intermediate.dense": "up_proj", "output.dense": "down_proj"}
ALIASES.update({v: k for k, v in ALIASES.items()})


def _matches(model: nn.Module, suffix: str) -> bool:
    return any(isinstance(m, nn.Linear) and (n == suffix or n.endswith("." + suffix))
               for n, m in model.named_modules())


def peft_targets(targets: list[str], model: nn.Module | None = None) -> list[str] | str:
    """A method option's target list as ``peft`` takes it (``'all-linear'`` is a string). With
    ``model``, a name that matches no linear layer is replaced by its alias from the other
    naming family when that one matches (``query`` -> ``q_proj`` on a Llama model, and back),
    so the defaults serve encoders and decoders alike."""
    targets = list(targets)
    if targets == ["all-linear"]:
        return "all-linear"
    if model is None:
        return targets
    return [ALIASES[t] if not _matches(model, t) and t in ALIASES and _matches(model, ALIASES[t])
            else t for t in targets]


def make_tuner(tuner_cls, model: nn.Module, config, adapter: str = "default",
               ranks: dict[str, int] | None = None, method: str = "LoRA"):
    """A ``peft`` tuner (``LoraModel``, ``PlateModel``, ...) injected into ``model`` in place,
    with unknown target modules reported as a ``RetainError`` that lists the linear layers.
    ``ranks``: the method's rank-like options (option -> value), each refused in one line when
    it is more than the narrowest adapted layer's width (more numbers than a full update)."""
    try:
        tuner = tuner_cls(model, config, adapter)
    except ValueError as e:
        if "not found" not in str(e) and "Target modules" not in str(e):
            raise
        targets = config.target_modules
        raise unknown_targets(model, [targets] if isinstance(targets, str) else sorted(targets)
                              ) from None
    check_ranks(model, tuner.targeted_module_names, ranks or {}, method)
    return tuner


def check_ranks(model: nn.Module, names: list[str], ranks: dict[str, int], method: str) -> None:
    """Each rank-like option (option -> value) refused in one line when it is more than the
    narrowest of the adapted layers ``names`` is wide (more numbers than a full update)."""
    widths = {}
    for name in names:
        layer = model.get_submodule(name)
        layer = getattr(layer, "base_layer", layer)
        if hasattr(layer, "in_features"):
            widths[name] = min(layer.in_features, layer.out_features)
    if not widths:
        return
    name, width = min(widths.items(), key=lambda kv: kv[1])
    for option, value in ranks.items():
        if value > width:
            raise RetainError(f"{method} {option} {value} is more than the narrowest adapted "
                              f"layer's width ({name}: {width}): give --set {option}={width} "
                              "or less")
