"""InfLoRA's options against its default on one benchmark profile: the official code's
first-task rule (``first_task=below``) and its eval-mode training (``dropout=false``).

    python benchmarks/inflora_options.py --profile quick

Writes ``benchmarks/results/inflora_options_<profile>.json``; the runs stay in
``runs/inflora/<profile>/options/``.
"""

from driver import Settings, settings_table

SETTINGS: Settings = {
    "default": ("inflora", None, None, None, {}),
    "first_task-below": ("inflora", None, None, None, {"first_task": "below"}),
    "dropout-false": ("inflora", None, None, None, {"dropout": False}),
}

if __name__ == "__main__":
    settings_table(SETTINGS, "inflora/{profile}/options", "inflora_options",
                   __doc__.splitlines()[0])
