"""Abstract perception toolkit: attribute profiles, radar charts, HTML reports, agreement with human
ratings, prompt ensembles and phrasing sensitivity.

Importing this package registers the curated prompt ensembles (``happy@ensemble``, the
``feel@ensemble`` / ``look@ensemble`` / ``ensemble`` presets), see ``ensembles``. The plotting
modules import matplotlib only when used.
"""
from uiqa_plugin.perception import ensembles  # noqa: F401  (registers the @ensemble attributes and presets)
