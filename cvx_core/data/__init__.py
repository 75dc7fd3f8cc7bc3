"""The data room: the trajectory data model, loaders and writers, atomic file writes and the
synthetic generator. It is the bottom of the package: it imports nothing from ``cvx_core``
outside ``cvx_core.data``.
"""
