"""What ``tau`` does without any old data: train a fresh PLATE adapter on a new task for a fixed
number of steps and measure how far the embeddings of held-out text moved."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import get_peft_model
from torch import nn

from retain.backbones import Backbone
from retain.methods.plate.config import PlateConfig


def drift_after_training(backbone: Backbone, config: PlateConfig, texts: list[str],
                         labels: list[int], heldout: list[str], steps: int, batch_size: int = 16,
                         lr: float = 1e-3, seed: int = 0) -> float:
    """``1 - mean cos(untouched, adapted)`` over the embeddings of ``heldout`` after ``steps``
    of Adam on (``texts``, ``labels``) with a fresh linear classifier. The backbone is restored
    (adapter unloaded, not merged) before returning."""
    return drifts_after_training(backbone, config, texts, labels, heldout, steps, batch_size, lr,
                                 seeds=(seed,))[0]


def drifts_after_training(backbone: Backbone, config: PlateConfig, texts: list[str],
                          labels: list[int], heldout: list[str], steps: int,
                          batch_size: int = 16, lr: float = 1e-3,
                          seeds: Sequence[int] = (0,)) -> list[float]:
    """:func:`drift_after_training` for each of ``seeds`` (data order and classifier), with
    ``B`` and ``Q`` chosen once: the adapter restarts from its initial ``A`` for every seed."""
    before = backbone.embed(heldout)
    was_training = backbone.model.training
    model = get_peft_model(backbone.model, config)
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    initial = [p.detach().clone() for p in trainable]
    drifts = []
    try:
        for seed in seeds:
            torch.manual_seed(seed)
            with torch.no_grad():
                for p, p0 in zip(trainable, initial, strict=True):
                    p.copy_(p0)
            head = nn.Linear(backbone.hidden_size, max(labels) + 1).to(device)
            opt = torch.optim.Adam(trainable + list(head.parameters()), lr=lr)
            order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))
            model.train()
            for step in range(steps):
                idx = order[(step * batch_size + torch.arange(batch_size)) % len(texts)].tolist()
                batch = {k: v.to(device) for k, v in
                         backbone.tokenize([texts[i] for i in idx], 64).items()}
                logits = head(backbone.pooled(batch, model))
                target = torch.tensor([labels[i] for i in idx], device=device)
                loss = nn.functional.cross_entropy(logits, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
            after = backbone.embed(heldout, lambda b: backbone.pooled(b, model))
            drifts.append(float(1.0 - (before * after).sum(-1).mean()))
    finally:
        backbone.model = model.unload().train(was_training)
    return drifts
