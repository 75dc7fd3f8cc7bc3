"""Scale: run the library's per-user work on data larger than memory and on more than one
machine. ``chunks`` reads posts in user-grouped chunks with the loader's parser (grouping
unsorted input out of core first) and ``stream`` writes results incrementally, so peak
memory follows the chunk size, not the file; ``ray_engine`` runs the same chunk work on a Ray cluster (Ray Data, encoder actors one
per GPU); ``ddp`` trains the classifier data-parallel with Ray Train. This room may import
``cvx_core.data``, ``features``, ``analysis`` and ``learn`` (and Ray, an optional extra:
``pip install cvx-core[scale]``), never ``cvx_core.sklearn``, the CLI or the app.
"""
