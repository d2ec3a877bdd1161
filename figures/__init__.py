"""Regenerate the CN paper's figures and tables (``cnzsl figures``).

Imports from ``analysis``, ``variance`` and ``landscape``; nothing imports ``figures``.
One module per figure (contract in :mod:`figures.context`), one shared style
(:mod:`figures.style`), the list and the runner in :mod:`figures.registry`.
"""

from figures.context import DataChoice, FigureContext, read_cache
from figures.registry import FIGURE_NAMES, figure_module, run_figures, select_figures

__all__ = ["FIGURE_NAMES", "DataChoice", "FigureContext", "figure_module", "read_cache", "run_figures",
           "select_figures"]
