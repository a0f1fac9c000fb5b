"""PLATE's ``peft`` layer: ``y = W x + s * scatter_rows(A (Q^T x))``.

``Q`` (``d_in x k``) and the selected rows' indices are buffers, ``A`` (``r x k``, zero at
start) the only parameter. The forward never forms the ``d_out x r`` selector nor the dense
``dW``: it computes the ``r`` selected rows' update and adds it into those output rows
(``index_add``). Of the two ways to associate the product, ``(x Q) A^T`` and ``x (A Q^T)^T``,
it takes the cheaper: the second as soon as a batch holds more tokens than ``r`` (training),
which costs ``r (k + n) d_in`` multiplications instead of ``n k (d_in + r)``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from peft.tuners._buffer_dict import BufferDict
from torch import nn

from retain.methods.peft_method import MethodLayer
from retain.methods.plate.config import PlateConfig
from retain.methods.plate.selection import choose

_DEFERRED: ContextVar[bool] = ContextVar("plate_deferred_selection", default=False)


@contextmanager
def deferred_selection() -> Iterator[None]:
    """Layers injected inside the block take placeholders for ``B``'s rows and ``Q`` instead of
    choosing them from the weights: for a run rebuilt from a checkpoint, whose tensors (of any
    shape: :class:`MethodLayer` follows the file) replace them next. Choosing costs an
    eigendecomposition per layer, all of it overwritten."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


class PlateLayer(MethodLayer):
    label = "PLATE"
    adapter_layer_names = ("plate_A",)
    other_param_names = ("plate_Q", "plate_index", "plate_scale")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.plate_A = nn.ParameterDict({})
        self.plate_Q = BufferDict({}, persistent=True)
        self.plate_index = BufferDict({}, persistent=True)
        self.plate_scale: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self.kwargs = kwargs
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"PLATE adapts nn.Linear layers, not {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features

    @torch.no_grad()
    def update_layer(self, adapter_name: str, config: PlateConfig, **kwargs: Any) -> None:
        """Choose ``B`` and ``Q`` from the current weight and add a zero ``A``."""
        weight = self.get_base_layer().weight
        if _DEFERRED.get():  # a checkpoint's B and Q replace these (deferred_selection)
            index = torch.arange(min(config.r, self.out_features), device=weight.device)
            q = weight.new_zeros(self.in_features, 1, dtype=torch.float32)
        else:
            index, subspace = choose(weight, config)
            q = subspace.basis
        self.plate_index[adapter_name] = index
        self.plate_Q[adapter_name] = q.to(torch.float32)
        self.plate_A[adapter_name] = nn.Parameter(
            torch.zeros(index.numel(), q.shape[1], device=weight.device))
        self.plate_scale[adapter_name] = float(config.alpha)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def update_rows(self, adapter: str) -> torch.Tensor:
        """``s * A Q^T`` (``r x d_in``): the update of the selected rows."""
        a = self.plate_A[adapter]
        return self.plate_scale[adapter] * (a @ self.plate_Q[adapter].T.to(a))

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """The dense ``dW = s B A Q^T`` (for merging and inspection, never in training)."""
        rows = self.update_rows(adapter)
        delta = rows.new_zeros(self.out_features, self.in_features)
        return delta.index_copy(0, self.plate_index[adapter], rows)

    @torch.no_grad()
    def _add_to_weight(self, adapter: str, sign: float) -> None:
        weight = self.get_base_layer().weight
        with torch.autocast(weight.device.type, enabled=False):  # the update as trained
            rows = self.update_rows(adapter).float().to(weight.dtype)
        weight.index_add_(0, self.plate_index[adapter], rows, alpha=sign)


class PlateLinear(PlateLayer, nn.Module):  # the layer's behaviour before nn.Module's
    def __init__(self, base_layer: nn.Module, adapter_name: str, config: PlateConfig,
                 **kwargs: Any) -> None:
        nn.Module.__init__(self)
        PlateLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    @torch.no_grad()
    def absorb(self, adapter: str) -> None:
        """Merge the adapter into ``W`` and restart it from ``A = 0`` with the same ``B`` and
        ``Q`` (the next task of a stream with ``recompute='original'``)."""
        self._add_to_weight(adapter, 1.0)
        self.plate_A[adapter].zero_()

    def adapter_output(self, result: torch.Tensor, x: torch.Tensor, adapter: str
                       ) -> torch.Tensor:
        a, q = self.plate_A[adapter], self.plate_Q[adapter]
        x_ = x.to(a.dtype)
        (r, k), d = a.shape, x_.shape[-1]
        n = x_.numel() // d
        if n * k * (d + r) < r * d * (k + n):  # few tokens: (x Q) A^T
            u = nn.functional.linear(torch.matmul(x_, q), a) * self.plate_scale[adapter]
        else:  # x (s A Q^T)^T: the r selected rows' update, not the dense dW
            u = nn.functional.linear(x_, self.update_rows(adapter))
        return result.index_add(-1, self.plate_index[adapter], u.to(result.dtype))
