"""Share's ``peft`` layer: ``y = W x + s (x F_a) F_b^T`` with ``F_a = [U_a | V_a] E_a`` and
``F_b = [U_b | V_b] E_b`` (``s = alpha / p``).

``U_a`` (``d_in x k``) and ``U_b`` (``d_out x k``) are the shared orthonormal bases (buffers);
``E_a``, ``E_b`` (``(k + phi) x p``) the current task's coefficients and ``V_a``, ``V_b``
(``d x phi``) its temporary directions (parameters). Before the first consolidation there is no
basis: ``F_a = V_a`` and ``F_b = V_b`` are an ordinary rank-``p`` LoRA (``V_b = 0`` at start).
``consolidate`` stacks every stored task's factors ``U E^s`` with the current ones, keeps the top
``k`` left singular vectors of the (uncentred) stack as the new basis, and re-projects every
task's coefficients onto it (``E^s <- U^T U_old E^s``); the next task starts from the latest
coefficients, with fresh temporary directions orthogonal to the basis and zero coefficients on
them, so its update starts equal to the last task's."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners._buffer_dict import BufferDict
from torch import nn

from retain.methods.peft_method import MethodLayer
from retain.methods.share.config import ShareConfig


class ShareLayer(MethodLayer):
    label = "Share"
    adapter_layer_names = ("share_Va", "share_Vb", "share_Ea", "share_Eb")
    other_param_names = ("share_Ua", "share_Ub", "share_Ea_tasks", "share_Eb_tasks")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ParameterDict({}))
        for name in self.other_param_names:
            setattr(self, name, BufferDict({}, persistent=True))
        self.share_config: dict[str, ShareConfig] = {}
        self.use_task: int | None = None  # a stored task's coefficients in place of the latest
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self.kwargs = kwargs
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"Share adapts nn.Linear layers, not {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features

    def update_layer(self, adapter_name: str, config: ShareConfig, **kwargs: Any) -> None:
        """A fresh adapter: no basis yet, a rank-``p`` LoRA (``V_a`` as LoRA's ``A``, ``V_b``
        zero)."""
        weight = self.get_base_layer().weight
        dev, p = weight.device, config.p
        self.share_config[adapter_name] = config
        v_a = torch.empty(self.in_features, p, device=dev)
        nn.init.kaiming_uniform_(v_a.T, a=5**0.5)  # as peft's LoRA initialises A
        self._set(adapter_name, u_a=v_a.new_zeros(self.in_features, 0),
                  u_b=v_a.new_zeros(self.out_features, 0), v_a=v_a,
                  v_b=v_a.new_zeros(self.out_features, p), e_a=v_a.new_zeros(0, p),
                  e_b=v_a.new_zeros(0, p), tasks_a=v_a.new_zeros(0, 0, p),
                  tasks_b=v_a.new_zeros(0, 0, p))
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _set(self, adapter: str, *, u_a, u_b, v_a, v_b, e_a, e_b, tasks_a, tasks_b) -> None:
        for name, value in (("share_Va", v_a), ("share_Vb", v_b), ("share_Ea", e_a),
                            ("share_Eb", e_b)):
            getattr(self, name)[adapter] = nn.Parameter(value.contiguous())
        for name, value in (("share_Ua", u_a), ("share_Ub", u_b), ("share_Ea_tasks", tasks_a),
                            ("share_Eb_tasks", tasks_b)):
            getattr(self, name)[adapter] = value.contiguous()

    def tasks(self, adapter: str) -> int:
        """How many tasks' coefficients are stored."""
        return self.share_Ea_tasks[adapter].shape[0]

    def factors(self, adapter: str, task: int | None = None,
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``F_a`` (``d_in x p``) and ``F_b`` (``d_out x p``): the current task's, or a stored
        task's (``task``); computed in ``dtype`` (default: the tensors' own)."""
        def get(store: BufferDict | nn.ParameterDict, index: int | None = None) -> torch.Tensor:
            t = store[adapter] if index is None else store[adapter][index]
            return t if dtype is None else t.to(dtype)

        u_a, u_b = get(self.share_Ua), get(self.share_Ub)
        if task is not None and task < self.tasks(adapter):
            return u_a @ get(self.share_Ea_tasks, task), u_b @ get(self.share_Eb_tasks, task)
        if u_a.shape[1] == 0:  # no basis yet: a plain LoRA
            return get(self.share_Va), get(self.share_Vb)
        f_a = torch.cat([u_a, get(self.share_Va)], 1) @ get(self.share_Ea)
        f_b = torch.cat([u_b, get(self.share_Vb)], 1) @ get(self.share_Eb)
        return f_a, f_b

    def scale(self, adapter: str) -> float:
        cfg = self.share_config[adapter]
        return cfg.alpha / cfg.p

    def get_delta_weight(self, adapter: str, task: int | None = None) -> torch.Tensor:
        """The dense ``dW = s F_b F_a^T`` (for merging and inspection, never in training)."""
        f_a, f_b = self.factors(adapter, task)
        return self.scale(adapter) * f_b @ f_a.T

    @torch.no_grad()
    def consolidate(self, adapter: str, generator: torch.Generator) -> None:
        """The basis update after a task: SVD of every task's factors, re-projection of all
        stored coefficients, and the next task's starting point. Everything is computed in
        float64 from the stored tensors, so the rank is that of the factors, whatever the
        adapter's dtype."""
        cfg = self.share_config[adapter]
        f_a, f_b = self.factors(adapter, dtype=torch.float64)
        new = []
        for current, basis, tasks in ((f_a, self.share_Ua, self.share_Ea_tasks),
                                      (f_b, self.share_Ub, self.share_Eb_tasks)):
            u_old = basis[adapter].double()
            factors = [u_old @ e for e in tasks[adapter].double()] + [current]
            u = _top_basis(torch.cat(factors, 1), cfg.k)
            new.append((u, torch.stack([u.T @ f for f in factors])))
        (u_a, tasks_a), (u_b, tasks_b) = new
        dtype = self.share_Va[adapter].dtype
        if u_a.shape[1] == 0 or u_b.shape[1] == 0:
            # every task so far left a zero update: each is stored as one (no basis), and the
            # next task goes on as the same plain LoRA
            zeros = self.share_Va[adapter].new_zeros
            self.share_Ua[adapter] = zeros(self.in_features, 0)
            self.share_Ub[adapter] = zeros(self.out_features, 0)
            self.share_Ea_tasks[adapter] = zeros(len(tasks_a), 0, cfg.p)
            self.share_Eb_tasks[adapter] = zeros(len(tasks_b), 0, cfg.p)
            return
        v_a, v_b = _complement(u_a, cfg.phi, generator), _complement(u_b, cfg.phi, generator)
        self._set(adapter, u_a=u_a.to(dtype), u_b=u_b.to(dtype), v_a=v_a.to(dtype),
                  v_b=v_b.to(dtype),  # fewer than phi where the basis fills the space
                  e_a=torch.cat([tasks_a[-1], u_a.new_zeros(v_a.shape[1], cfg.p)]).to(dtype),
                  e_b=torch.cat([tasks_b[-1], u_b.new_zeros(v_b.shape[1], cfg.p)]).to(dtype),
                  tasks_a=tasks_a.to(dtype), tasks_b=tasks_b.to(dtype))
        self.set_adapter(self.active_adapters)


def _top_basis(stack: torch.Tensor, k: int) -> torch.Tensor:
    """The top ``min(k, rank)`` left singular vectors of the float64 ``stack`` (orthonormal
    columns); the rank counts singular values above ``max(shape)`` float64 epsilons of the
    largest (as ``torch.linalg.matrix_rank``), never the adapter dtype's epsilon."""
    if stack.numel() == 0:
        return stack.new_zeros(stack.shape[0], 0)
    u, s, _ = torch.linalg.svd(stack, full_matrices=False)
    tol = s[0] * max(stack.shape) * torch.finfo(torch.float64).eps
    rank = int((s > tol).sum()) if s[0] > 0 else 0
    return u[:, :min(k, rank)].contiguous()


def _complement(u: torch.Tensor, phi: int, generator: torch.Generator) -> torch.Tensor:
    """``phi`` random orthonormal directions orthogonal to ``u``'s columns (fewer if the
    complement is smaller)."""
    d = u.shape[0]
    width = min(phi, d - u.shape[1])
    r = torch.randn(d, width, dtype=torch.float64, generator=generator).to(u.device)
    r = r - u @ (u.T @ r)
    return torch.linalg.qr(r).Q if width else r


class ShareLinear(ShareLayer, nn.Module):  # the layer's behaviour before nn.Module's
    def __init__(self, base_layer: nn.Module, adapter_name: str, config: ShareConfig,
                 **kwargs: Any) -> None:
        nn.Module.__init__(self)
        ShareLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def adapter_output(self, result: torch.Tensor, x: torch.Tensor, adapter: str
                       ) -> torch.Tensor:
        f_a, f_b = self.factors(adapter, self.use_task)
        x_ = x.to(f_a.dtype)
        return result + (self.scale(adapter) * (x_ @ f_a) @ f_b.T).to(result.dtype)
