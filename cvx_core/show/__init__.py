"""Figures for notebooks and the app: Plotly builders (``pip install plotly``), as
``ruptures.show`` is for ruptures, and the adapters from library results to their inputs
(``inputs``). ``from cvx_core.show import words_timeline_figure, roc_figure, roc_curves``.
"""

from cvx_core.show.inputs import *  # noqa: F401,F403
from cvx_core.show.inputs import __all__ as _inputs_all
from cvx_core.show.plots import *  # noqa: F401,F403
from cvx_core.show.plots import __all__ as _plots_all

__all__ = [*_plots_all, *_inputs_all]
