"""Self-contained HTML reports (jinja2, autoescaped, figures embedded) from a results folder."""

from .build import SECTIONS, build_report, collect_runs

__all__ = ["build_report", "collect_runs", "SECTIONS"]
