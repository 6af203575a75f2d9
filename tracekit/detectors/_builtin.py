"""Imports every built-in rule module so that each registers itself. Add a module here when you add a rule."""

import importlib

_RULES = ("multi_pmi", "exit_stats", "pmu_msr", "lvtpc", "mutex_hotspots")

for _name in _RULES:
    importlib.import_module(f"{__package__}.{_name}")
