"""The data room: the trajectory data model, loaders and writers (``io``), the one
chunk-aware parser (``parse.parse_posts``) with its column rules (``columns``, ``times``)
and format readers (``formats``), truth files, atomic file writes and the synthetic
generator. It is the bottom of the package: it imports nothing from ``cvx_core``
outside ``cvx_core.data``.
"""
