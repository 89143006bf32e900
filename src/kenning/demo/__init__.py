"""Real demo media and evaluation data fetched from packages.

Everything lives in :mod:`kenning.demo.corpus` (imported from there, not re-exported
here, so that ``python -m kenning.demo.corpus`` runs without a double import).
"""
