"""AppTest runs in the test process: no UMAP warm-up thread there (it would compile numba
functions on the test's CPU; the Explore page and its tests do not need it)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_umap_warmup(monkeypatch) -> None:
    monkeypatch.setenv("CVX_WARM_UMAP", "0")
