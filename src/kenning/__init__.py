"""Kenning: a self-hosted media intelligence engine."""

__version__ = "0.1.0"
