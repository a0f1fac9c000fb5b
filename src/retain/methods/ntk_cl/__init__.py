"""NTK-CL (Liu et al., 2024): ``config.py`` the knobs, ``modules.py`` the adapters and prompt
generators and their hooks, ``losses.py`` the regularising terms, ``method.py`` the lifecycle."""

from retain.methods.ntk_cl.config import NTKCLOptions
from retain.methods.ntk_cl.method import NTKCL

__all__ = ["NTKCL", "NTKCLOptions"]
