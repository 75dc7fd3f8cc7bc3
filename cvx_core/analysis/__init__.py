"""The analysis room: change points (PELT/KernelCPD, BOCPD), drift attribution, narratives,
2-D projections and batch analysis over a set. It may import ``cvx_core.data`` and
``cvx_core.features``; never ``learn``, ``scale``, the CLI or the app.
"""
