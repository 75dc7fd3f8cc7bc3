"""The learning room: the classifier (model), its trainer, metrics, run folders (``runs``
stores and loads documents and weights and knows no trainer), attention-vs-attribution
comparison and text encoders. It may import ``data``, ``features`` and ``analysis``;
never ``scale``, the CLI or the app.
"""
