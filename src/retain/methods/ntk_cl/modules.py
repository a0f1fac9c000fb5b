"""NTK-CL's two module families, placed beside a frozen encoder's blocks with forward hooks on
the blocks' own linear layers (BERT-style and ViT-style encoders):

- ``Adapter``: a parallel bottleneck beside the MLP, ``s * up(relu(down(x)))`` added to the MLP's
  output, where ``x`` is the MLP's input; ``up`` starts at zero;
- ``PromptGenerator``: ``prompts`` tokens mixed from the attention's input tokens along the token
  axis (padding masked out, so a batch padded further gives the same prompts), then a LayerNorm;
  the prompts join the block's self-attention as extra keys and values through the layer's own
  key and value projections, and their attention output is added per head through a gate that
  starts at zero (zero-initialised attention gating, as in LLaMA-Adapter).

The authors' code inserts the prompts as real tokens and zero-initialises the map and the
LayerNorm's scale, which both changes the encoder's output before training (ten zero tokens
take part in attention) and leaves the map without a gradient for ever (only the LayerNorm's
bias learns). Gating the prompts' attention keeps the encoder's output unchanged at the start
and lets the map learn.

``Blocks`` holds one ``(Adapter, PromptGenerator)`` pair per encoder block; ``inject`` registers
the hooks once and a ``Switch`` says which ``Blocks`` and which family act in a forward pass, on
which slice of its rows: several passes over one batch run as one forward over the batch
stacked that many times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from retain.backbones import transformer_blocks
from retain.errors import RetainError

# suffixes of each role's linear layer in a block: BERT-style, then ViT-style (transformers 5)
ROLES = {
    "query": ("attention.self.query", "attention.attention.query", "q_proj"),
    "key": ("attention.self.key", "attention.attention.key", "k_proj"),
    "value": ("attention.self.value", "attention.attention.value", "v_proj"),
    "attn_out": ("attention.output.dense", "o_proj"),
    "mlp_in": ("intermediate.dense", "fc1"),
    "mlp_out": ("output.dense", "fc2"),
}


class Adapter(nn.Module):
    def __init__(self, dim: int, width: int, scale: float):
        super().__init__()
        self.scale = scale
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.relu(self.down(x)))


class PromptGenerator(nn.Module):
    def __init__(self, dim: int, length: int, prompts: int, heads: int):
        super().__init__()
        self.heads = heads
        mixer = nn.Linear(length, prompts)  # along the token axis: its default initialisation
        self.mix = nn.Parameter(mixer.weight.detach().clone())  # prompts x length
        self.bias = nn.Parameter(mixer.bias.detach().clone())
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Parameter(torch.zeros(heads))

    def generate(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Prompts ``[B, prompts, D]`` from tokens ``[B, L, D]`` (``mask`` ``[B, L]``)."""
        length = x.shape[1]
        if length > self.mix.shape[1]:
            raise RetainError(f"ntk-cl prompt generators mix at most {self.mix.shape[1]} tokens, "
                              f"got {length}: lower --max-length")
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        mixed = torch.einsum("bld,pl->bpd", x, self.mix[:, :length]) + self.bias[:, None]
        return self.norm(mixed)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Gated attention of queries ``[B, L, D]`` over the prompts' keys and values
        ``[B, P, D]``, heads merged back: ``[B, L, D]``."""
        b, n, d = q.shape
        h = self.heads

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)

        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // h)
        out = scores.softmax(-1) @ split(v)  # [B, H, L, d/h]
        return (self.gate[None, :, None, None] * out).transpose(1, 2).reshape(b, n, d)


class Blocks(nn.Module):
    """One adapter and one prompt generator per encoder block."""

    def __init__(self, n: int, dim: int, length: int, heads: int, width: int, scale: float,
                 prompts: int):
        super().__init__()
        self.adapters = nn.ModuleList(Adapter(dim, width, scale) for _ in range(n))
        self.prompts = nn.ModuleList(PromptGenerator(dim, length, prompts, heads)
                                     for _ in range(n))


@dataclass
class Switch:
    """Which modules act in the next forward pass: ``segments``, one ``(blocks, family)`` per
    equal slice of the batch's rows, in order (``blocks`` None: the encoder alone on that
    slice; ``family`` 'adapter' or 'prompt'), so that several passes share one forward;
    ``mask`` is the (stacked) batch's attention mask."""

    segments: list[tuple[Blocks | None, str]] = field(default_factory=list)
    mask: torch.Tensor | None = None
    stash: dict = field(default_factory=dict)  # per pass: MLP inputs, queries, prompts

    def acting(self, family: str) -> list[tuple[int, Blocks]]:
        """``(j, blocks)`` of the segments where ``family`` acts (none outside a pass: the
        encoder alone)."""
        return [(j, blocks) for j, (blocks, f) in enumerate(self.segments)
                if blocks is not None and f == family]

    def rows(self, n: int, j: int) -> slice:
        """Segment ``j``'s rows of a stacked batch of ``n`` rows."""
        size = n // len(self.segments)
        return slice(j * size, (j + 1) * size)

    def add(self, h: torch.Tensor, family: str, delta) -> torch.Tensor:
        """``h`` with ``delta(j, rows, blocks)`` added to the rows of each segment where
        ``family`` acts."""
        acting, parts = dict(self.acting(family)), []
        for j in range(len(self.segments)):
            rows = self.rows(len(h), j)
            parts.append(h[rows] + delta(j, rows, acting[j]) if j in acting else h[rows])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's blocks: ``encoder.layer`` (BERT) or ``layers`` (ViT in transformers 5)."""
    layers = transformer_blocks(model)
    if layers is None:
        raise RetainError(f"ntk-cl needs a BERT- or ViT-style encoder, got "
                          f"{type(model).__name__}: use --backbone minilm, tiny-bert, tiny-vit "
                          "or a BERT/ViT folder")
    return layers


def _role(layer: nn.Module, role: str) -> nn.Linear:
    for name, module in layer.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for suffix in ROLES[role]:
            if (name == suffix or name.endswith("." + suffix)) and not (
                    role == "mlp_out" and "attention" in name):
                return module
    raise RetainError(f"ntk-cl could not find the {role} layer of an encoder block (looked for "
                      f"{', '.join(ROLES[role])})")


def sequence_length(model: nn.Module) -> int:
    """The most tokens an encoder block sees: image patches + CLS, or the position table."""
    cfg = model.config
    if hasattr(cfg, "image_size") and hasattr(cfg, "patch_size"):
        return (cfg.image_size // cfg.patch_size) ** 2 + 1
    return int(cfg.max_position_embeddings)


def inject(model: nn.Module, switch: Switch) -> list:
    """Register the hooks on every encoder block; they act only as ``switch`` says."""
    handles = []
    for i, layer in enumerate(encoder_layers(model)):
        roles = {r: _role(layer, r) for r in ROLES}

        def on_query(module, args, out, i=i, roles=roles):
            for j, blocks in switch.acting("prompt"):
                rows = switch.rows(len(out), j)
                mask = None if switch.mask is None else switch.mask[rows]
                prompts = blocks.prompts[i].generate(args[0][rows], mask)
                switch.stash[i, j] = (out[rows], roles["key"](prompts), roles["value"](prompts))

        def before_attn_out(module, args, i=i):
            if not switch.acting("prompt"):
                return None
            return (switch.add(args[0], "prompt", lambda j, rows, blocks: blocks.prompts[i]
                               .attend(*switch.stash.pop((i, j)))),) + args[1:]

        def before_mlp(module, args, i=i):
            if switch.acting("adapter"):
                switch.stash[i] = args[0]

        def after_mlp(module, args, out, i=i):
            if not switch.acting("adapter"):
                return None
            x = switch.stash.pop(i)
            return switch.add(out, "adapter", lambda j, rows, blocks: blocks.adapters[i](x[rows]))

        handles += [roles["query"].register_forward_hook(on_query),
                    roles["attn_out"].register_forward_pre_hook(before_attn_out),
                    roles["mlp_in"].register_forward_pre_hook(before_mlp),
                    roles["mlp_out"].register_forward_hook(after_mlp)]
    return handles
