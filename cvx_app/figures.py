"""The app's figures: the Plotly builders of :mod:`cvx_core.show` (one set of figures for the
app and for notebooks). Pages import this module; nothing here but the re-export."""

from cvx_core.show.plots import *  # noqa: F401,F403
from cvx_core.show.plots import __all__  # noqa: F401
