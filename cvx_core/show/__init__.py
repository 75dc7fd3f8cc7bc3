"""Figures for notebooks and the app: Plotly builders (``pip install plotly``), as
``ruptures.show`` is for ruptures. ``from cvx_core.show import explore_figure, roc_figure``.
"""

from cvx_core.show.plots import *  # noqa: F401,F403
from cvx_core.show.plots import __all__  # noqa: F401
