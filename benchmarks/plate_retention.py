"""PLATE's retention at seq-lora's plasticity: settings of the backbone and head learning rates and
of PLATE's knobs on one benchmark profile, beside seq-lora and a frozen backbone with a trained
linear head, saved as one table (JSON).

    python benchmarks/plate_retention.py --profile quick

Each run lives in ``runs/plate/<profile>/explore/<name>/``; a finished run of the same config is
read, not run again (``retain run ... --out`` that folder gives the same run). The rows go to
``benchmarks/results/plate_retention_<profile>.json`` and are printed. Run nothing beside it.
"""

from driver import Settings, settings_table

SETTINGS: Settings = {
    "ncm-growing-headlr2e-3": ("frozen-ncm", "growing", 2e-3, None, {}),
    "seq-lora-headlr2e-3": ("seq-lora", None, None, 2e-3, {}),
    "r8-tau0.98-lr1e-4": ("plate", None, 1e-4, 5e-4, {"r": 8, "tau": 0.98}),
    "r8-tau0.98-lr1e-4-headlr2e-3": ("plate", None, 1e-4, 2e-3, {"r": 8, "tau": 0.98}),
    "r8-tau0.98-lr2e-5-headlr2e-3": ("plate", None, 2e-5, 2e-3, {"r": 8, "tau": 0.98}),
    "seq-lora-lr1e-4-headlr2e-3": ("seq-lora", None, 1e-4, 2e-3, {}),
    "r8-tau0.98-lr1e-5-headlr2e-3": ("plate", None, 1e-5, 2e-3, {"r": 8, "tau": 0.98}),
    "r32-tau0.9-maxrank32": ("plate", None, None, None, {"r": 32, "tau": 0.9, "max_rank": 32}),
}

if __name__ == "__main__":
    settings_table(SETTINGS, "plate/{profile}/explore", "plate_retention",
                   __doc__.splitlines()[0])
