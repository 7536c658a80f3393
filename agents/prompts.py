"""The trainer's prompt texts: :mod:`sqlenv.prompts`, re-exported under their old import path.

Every prompt text (the trainer's and the stacks' defaults, and why they differ) lives in
``sqlenv/prompts.py``, torch-free, so that ``agents`` and every adapter read the same bytes. New code
imports ``sqlenv.prompts`` directly.
"""

from sqlenv.prompts import *  # noqa: F403 -- the whole module, by design
from sqlenv.prompts import __all__  # noqa: F401
