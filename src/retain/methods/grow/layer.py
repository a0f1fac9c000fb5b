"""A transformer MLP widened so that it computes exactly the same function.

``y = W_down act(W_up x)`` (or ``W_down (act(W_gate x) * W_up x)``) is a sum over hidden units,
so stacking ``g`` copies of ``W_up`` (``W_gate``, the up bias) along the hidden axis and ``g``
copies of ``W_down / g`` along its input axis leaves ``y`` unchanged. Here the copies are kept
as separate linear layers beside the untouched pretrained one, so that what trains, what stays
frozen and what a checkpoint stores are whole tensors:

- :class:`GrownUp` replaces an up (or gate) projection: ``[W_0 x + b_0 | W_1 x + b_1 | ...]``;
- :class:`GrownDown` replaces the down projection: ``s_0 V_0 h_0 + b + V_1 h_1 + ...``, where
  ``h_k`` is copy ``k``'s slice of the hidden units and ``s_0`` the scale of the pretrained
  ``V_0`` (a number, so the pretrained tensor itself is never rewritten).

The widths of the copies are recorded (:meth:`MLPSite.widths`) and a grown model is rebuilt by
replaying its growths. This is not a ``peft`` tuner: ``peft`` adapters keep each layer's shape
and add a delta to its weight, while growth changes the hidden width of a pair of layers and
cannot be merged back into the pretrained shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from retain.backbones import transformer_blocks
from retain.errors import RetainError

# (up, down, gate) of a block's MLP: BERT, ViT of transformers < 5, Llama-style, ViT 5
FAMILIES = (("intermediate.dense", "output.dense", None),
            ("mlp.up_proj", "mlp.down_proj", "mlp.gate_proj"),
            ("mlp.fc1", "mlp.fc2", None))


class GrownUp(nn.Module):
    """An up (or gate) projection and its copies, outputs concatenated along the hidden axis."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.copies = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.copies):
            return self.base(x)
        return torch.cat([self.base(x), *(c(x) for c in self.copies)], -1)


class GrownDown(nn.Module):
    """A down projection over the concatenated hidden units: ``s_0 V_0 h_0 + b + sum V_k h_k``."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.copies = nn.ModuleList()
        self.base_scale = 1.0  # a number in the method's state, not a stored tensor

    def widths(self) -> list[int]:
        return [self.base.in_features, *(c.in_features for c in self.copies)]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not len(self.copies) and self.base_scale == 1.0:
            return self.base(h)
        parts = h.split(self.widths(), -1)
        y = F.linear(parts[0], self.base.weight) * self.base_scale
        if self.base.bias is not None:
            y = y + self.base.bias
        for copy, part in zip(self.copies, parts[1:], strict=True):
            y = y + copy(part)
        return y


def _copies(linear: nn.Linear, n: int, axis: int, scale: float = 1.0) -> nn.Linear:
    """``n`` copies of ``scale *`` the weight of ``linear`` side by side: output rows (``axis=0``,
    with the bias: an up projection) or input columns (``axis=1``, no bias: a down projection),
    computed in float32 or wider."""
    w = linear.weight.detach()
    work = torch.promote_types(w.dtype, torch.float32)
    weight = torch.cat([(w.to(work) * scale).to(w.dtype)] * n, axis)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=axis == 0 and linear.bias is not None,
                    device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if new.bias is not None:
            new.bias.copy_(torch.cat([linear.bias.detach()] * n))
    return new


@dataclass
class MLPSite:
    """One block's MLP: its up (and gate) projections and its down projection, grown in place."""

    index: int
    block: nn.Module
    up: str
    down: str
    gate: str | None

    def _module(self, path: str) -> nn.Module:
        return self.block.get_submodule(path)

    def _swap(self, path: str, cls) -> nn.Module:
        module = self._module(path)
        if not isinstance(module, cls):
            if not isinstance(module, nn.Linear):
                raise RetainError(f"grow needs plain linear MLP layers; block {self.index}'s "
                                  f"{path} is a {type(module).__name__}")
            parent, _, name = path.rpartition(".")
            module = cls(module)
            setattr(self.block.get_submodule(parent) if parent else self.block, name, module)
        return module

    def ups(self) -> list[GrownUp]:
        return [self._swap(p, GrownUp) for p in (self.up, self.gate) if p]

    def down_layer(self) -> GrownDown:
        return self._swap(self.down, GrownDown)

    def widths(self) -> list[int]:
        down = self._module(self.down)
        return down.widths() if isinstance(down, GrownDown) else [down.in_features]

    def copies(self) -> list[nn.Linear]:
        """Every copy's linear layers (up, gate, down), oldest first; none before growth."""
        layers = [self._module(p) for p in (self.up, self.gate, self.down) if p]
        return [c for layer in layers if isinstance(layer, GrownUp | GrownDown)
                for c in layer.copies]

    def down_weight(self) -> nn.Parameter:
        """The pretrained down-projection's weight, grown or not."""
        down = self._module(self.down)
        return down.base.weight if isinstance(down, GrownDown) else down.weight

    @torch.no_grad()
    def merge(self, width: int) -> None:
        """Fold the copies into plain linear layers of ``width`` hidden units: the pretrained
        units (down-projection times ``s_0``), then every copy, then zero units up to
        ``width`` (their up rows and down columns are zero, so they add nothing: act(0) = 0 for
        GELU and SiLU). Every block of a model merged to one width fits its config's
        ``intermediate_size``."""
        def plain(weight, bias):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                            device=weight.device, dtype=weight.dtype)
            new.weight.copy_(weight)
            if bias is not None:
                new.bias.copy_(bias)
            return new

        for path in (self.up, self.gate, self.down):
            if not path:
                continue
            layer = self._module(path)
            if path == self.down:
                base = layer.base if isinstance(layer, GrownDown) else layer
                scale = layer.base_scale if isinstance(layer, GrownDown) else 1.0
                parts = [base.weight * scale, *(c.weight for c in getattr(layer, "copies", ()))]
                have = sum(w.shape[1] for w in parts)
                parts.append(base.weight.new_zeros(base.out_features, width - have))
                merged = plain(torch.cat(parts, 1), base.bias)
            else:
                linears = [layer.base, *layer.copies] if isinstance(layer, GrownUp) else [layer]
                have = sum(c.out_features for c in linears)
                weight = torch.cat([c.weight for c in linears]
                                   + [linears[0].weight.new_zeros(width - have,
                                                                  linears[0].in_features)])
                bias = None if linears[0].bias is None else torch.cat(
                    [c.bias for c in linears] + [linears[0].bias.new_zeros(width - have)])
                merged = plain(weight, bias)
            parent, _, name = path.rpartition(".")
            setattr(self.block.get_submodule(parent) if parent else self.block, name, merged)

    @torch.no_grad()
    def grow(self, factor: int, source: str = "latest") -> int:
        """Add ``factor - 1`` copies of the source units (the latest copy or the pretrained
        units) as one new copy, dividing the source's down-projection by ``factor``; return
        the new copy's width. The function is unchanged."""
        ups, down = self.ups(), self.down_layer()
        k = len(down.copies) if source == "latest" else 0  # 0: the pretrained units
        for up in ups:
            up.copies.append(_copies(up.copies[k - 1] if k else up.base, factor - 1, 0)
                             .requires_grad_(True))
        src = down.copies[k - 1] if k else down.base
        new = _copies(src, factor - 1, 1, (1.0 if k else down.base_scale) / factor)
        down.copies.append(new.requires_grad_(True))
        if k:
            src.weight.div_(factor)
        else:
            down.base_scale /= factor
        return new.in_features


def mlp_sites(model: nn.Module) -> list[MLPSite]:
    """Every block's MLP, for BERT-, ViT- and Llama-style models."""
    blocks = transformer_blocks(model)
    if blocks is None:
        raise RetainError(f"grow found no transformer blocks in {type(model).__name__}: use a "
                          "BERT-, ViT- or Llama-style backbone")
    sites = []
    for i, block in enumerate(blocks):
        for up, down, gate in FAMILIES:
            try:
                for path in (up, down, *([gate] if gate else [])):
                    block.get_submodule(path)
            except AttributeError:
                continue
            sites.append(MLPSite(i, block, up, down, gate))
            break
        else:
            raise RetainError(f"grow found no MLP in block {i} ({type(block).__name__}); it "
                              "knows BERT (intermediate.dense / output.dense), Llama "
                              "(gate_proj / up_proj / down_proj) and ViT (fc1 / fc2) blocks")
    return sites
