"""Recommendations: candidate sources, ranking, re-ranking, explanations and audits."""
