"""``cvx_core.data.deprecation``: the one deprecated-name ``__getattr__`` (warning text, the
caller's line, the usual AttributeError, a lazy lookup) and every module that keeps an old
name uses it (no twin left)."""

from __future__ import annotations

import importlib
import warnings

import pytest

from cvx_core.data.deprecation import deprecated_names

# module -> (old name, what the warning says to use, the object the new name is)
KEPT = {
    "cvx_core": ("TemporalFeatures", "cvx_core.sklearn.FeatureTransformer", ("cvx_core.sklearn", "FeatureTransformer")),
    "cvx_core.features.learnable": ("TemporalFeatureExtractor", "LearnableFeatures",
                                    ("cvx_core.features.learnable", "LearnableFeatures")),
    "cvx_core.sklearn": ("TemporalFeatures", "FeatureTransformer", ("cvx_core.sklearn", "FeatureTransformer")),
    "cvx_core.scale.stream": ("StreamAnalysis", "StreamSummary", ("cvx_core.scale.stream", "StreamSummary")),
    "cvx_core.learn.runs": ("weights_digest", "run_weights_digest", ("cvx_core.learn.runs", "run_weights_digest")),
}


def test_an_old_name_warns_with_its_replacement_at_the_callers_line_and_looks_the_object_up_lazily():
    calls = []
    getattr_ = deprecated_names("pkg.mod", {"Old": ("New", lambda: calls.append(1) or "the new object")})
    assert calls == []  # nothing looked up until used
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert getattr_("Old") == "the new object"
    assert [str(w.message) for w in caught] == ["pkg.mod.Old is deprecated: use New"]
    assert caught[0].category is DeprecationWarning and caught[0].filename == __file__
    assert calls == [1]


def test_an_unknown_name_is_the_usual_attribute_error_without_a_warning():
    getattr_ = deprecated_names("pkg.mod", {"Old": ("New", lambda: None)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="module 'pkg.mod' has no attribute 'Missing'"):
            getattr_("Missing")


@pytest.mark.parametrize("module", sorted(KEPT))
def test_every_module_with_an_old_name_uses_the_one_helper_and_says_the_same_sentence(module):
    old, use, (home, new) = KEPT[module]
    mod = importlib.import_module(module)
    if module != "cvx_core":  # the package's own __getattr__ resolves its exports first, then delegates
        assert mod.__getattr__.__module__ == "cvx_core.data.deprecation"
    with pytest.warns(DeprecationWarning, match=f"^{module}.{old} is deprecated: use {use}$") as caught:
        value = getattr(mod, old)
    assert caught[0].filename == __file__  # the caller's line, also through the package's own __getattr__
    assert value is getattr(importlib.import_module(home), new)
    with pytest.raises(AttributeError, match=f"module '{module}' has no attribute 'no_such_name'"):
        getattr(mod, "no_such_name")
