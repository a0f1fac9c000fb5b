"""PLATE's selection: the authors' randomised choice of B and Q (``selection=official``) against
the exact one (the default) on one benchmark profile: which protects more, at what plasticity.

    python benchmarks/plate_options.py --profile quick

Writes ``benchmarks/results/plate_options_<profile>.json``; the runs stay in
``runs/plate/<profile>/options/``.
"""

from driver import Settings, settings_table

SETTINGS: Settings = {
    "default": ("plate", None, None, None, {}),
    "selection-official": ("plate", None, None, None, {"selection": "official"}),
}

if __name__ == "__main__":
    settings_table(SETTINGS, "plate/{profile}/options", "plate_options",
                   __doc__.splitlines()[0])
