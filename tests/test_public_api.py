"""The public API: a small top tier in ``cvx_core``, one public name per concept, the old
names still working with a DeprecationWarning, and no two public functions or classes of
the library sharing a name across modules unless one re-exports the other."""

from __future__ import annotations

import ast
import importlib
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import cvx_core

PKG = Path(__file__).resolve().parents[1] / "cvx_core"


def test_the_top_tier_is_small_and_every_name_resolves_without_a_warning():
    assert 15 <= len(cvx_core.__all__) <= 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in cvx_core.__all__:
            assert getattr(cvx_core, name) is not None


def test_the_top_tier_covers_load_extract_detect_explain_train_compare_embed_and_forecast():
    wanted = {"load_trajectories", "TemporalFeaturesConfig", "extract_features", "detect_changepoints",
              "explain_changepoints", "TrainConfig", "train", "compare_run", "embed_posts", "fit_forecaster"}
    assert wanted <= set(cvx_core.__all__)


@pytest.mark.parametrize("name", sorted(cvx_core._MOVED))
def test_every_old_flat_name_warns_and_is_the_subpackages_object(name):
    with pytest.warns(DeprecationWarning, match=f"cvx_core.{name} is deprecated: use cvx_core.{cvx_core._MOVED[name]}"):
        value = getattr(cvx_core, name)
    assert value is getattr(importlib.import_module(f"cvx_core.{cvx_core._MOVED[name]}"), name)


def test_renamed_flat_names_warn_and_point_to_the_one_name_of_their_concept():
    from cvx_core.features.differentiable import TorchBackend
    from cvx_core.features.learnable import LearnableFeatures
    from cvx_core.sklearn import FeatureTransformer

    for old, new in (("TemporalFeatureExtractor", LearnableFeatures), ("temporal_features", TorchBackend.extract_all),
                     ("TemporalFeatures", FeatureTransformer)):
        with pytest.warns(DeprecationWarning, match=f"cvx_core.{old} is deprecated"):
            assert getattr(cvx_core, old) == new


def test_unknown_names_and_subpackages():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cvx_core.nope  # noqa: B018
    assert cvx_core.learn is importlib.import_module("cvx_core.learn")
    assert {"data", "features", "learn", "show"} <= set(dir(cvx_core))


def test_the_forecaster_and_the_ode_block_are_reachable():
    from cvx_core.features.ode import ODEConfig, ode_config_from
    from cvx_core.learn.forecast import LatentODEForecaster

    assert cvx_core.fit_forecaster.__module__ == "cvx_core.learn.forecast"
    assert ode_config_from(cvx_core.TemporalFeaturesConfig(ode_latent_dim=4)) is not None
    assert ODEConfig and LatentODEForecaster


def test_the_old_names_of_a_module_warn_and_still_work():
    import torch

    from cvx_core.features import differentiable, learnable
    from cvx_core.learn import runs

    with pytest.warns(DeprecationWarning, match="use LearnableFeatures"):
        assert learnable.TemporalFeatureExtractor is learnable.LearnableFeatures
    with pytest.warns(DeprecationWarning, match="use run_weights_digest"):
        assert runs.weights_digest is runs.run_weights_digest
    E, t = torch.randn(6, 3, dtype=torch.float64), np.arange(6.0)
    with pytest.warns(DeprecationWarning, match="TorchBackend.extract_all"):
        old = differentiable.temporal_features(E, t)
    torch.testing.assert_close(old, differentiable.TorchBackend.extract_all(E, t), rtol=0, atol=0)


def test_extract_features_is_the_analytic_vector_of_every_user_in_order(small_planted):
    from cvx_core.features.analytic import AnalyticBackend, feature_names

    ts, _ = small_planted
    X = cvx_core.extract_features(ts)
    assert X.shape == (len(ts), len(feature_names(ts.dim))) and X.dtype == np.float64
    for k in (0, len(ts) - 1):
        tr = list(ts)[k]
        np.testing.assert_array_equal(X[k], AnalyticBackend.extract_all(tr.embeddings, tr.timestamps))
        np.testing.assert_array_equal(cvx_core.extract_features(tr), X[k])


def test_extract_features_resolves_auto_scales_against_the_data_and_refuses_other_inputs(small_planted):
    from cvx_core.features.scales import resolve_features

    ts, _ = small_planted
    auto = cvx_core.TemporalFeaturesConfig.auto()
    resolved, _ = resolve_features(auto, ts)
    np.testing.assert_array_equal(cvx_core.extract_features(ts, config=auto),
                                  cvx_core.extract_features(ts, config=resolved))
    with pytest.raises(TypeError, match="TrajectorySet or a Trajectory"):
        cvx_core.extract_features(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="TemporalFeaturesConfig"):
        cvx_core.extract_features(ts, config={"scales": [1.0]})


def test_freeze_encoder_defaults_to_frozen_in_the_library_and_the_cli(tmp_path):
    from cvx_core.cli import _train_config, build_parser
    from cvx_core.learn.config import TrainConfig

    assert TrainConfig().freeze_encoder is True
    parse = build_parser().parse_args
    frozen = _train_config(parse(["train", "d.parquet", "--out", str(tmp_path / "r"), "--text-encoder", "hashing"]))
    tuned = _train_config(parse(["train", "d.parquet", "--out", str(tmp_path / "r"), "--text-encoder", "hashing",
                                 "--finetune"]))
    assert frozen.freeze_encoder is True and tuned.freeze_encoder is False


# ---- one public name per concept -------------------------------------------------------------
def _public_definitions() -> dict[str, list[str]]:
    """Public function/class name -> the modules of ``cvx_core`` that define it (``def``/``class``
    at module level; an import is a re-export, not a definition)."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PKG.rglob("*.py")):
        module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                found[node.name].append(module)
    return found


def test_no_two_public_functions_of_the_library_share_a_name_across_modules():
    twins = {name: mods for name, mods in _public_definitions().items() if len(mods) > 1}
    assert not twins, f"defined in more than one module (keep one, re-export or rename the other): {twins}"


def test_the_twin_walker_sees_a_planted_second_definition(tmp_path, monkeypatch):
    fake = PKG / "data" / "_planted_twin_for_test.py"
    fake.write_text("def load_trajectories():\n    pass\n\nfrom cvx_core.data.io import save_trajectories\n")
    try:
        found = _public_definitions()
    finally:
        fake.unlink()
    assert found["load_trajectories"] == ["cvx_core.data._planted_twin_for_test", "cvx_core.data.io"]
    assert found["save_trajectories"] == ["cvx_core.data.io"]  # an import re-exports


def test_the_transformers_old_name_warns_and_is_the_feature_transformer():
    import cvx_core.sklearn as sk

    with pytest.warns(DeprecationWarning, match="TemporalFeatures is deprecated: use FeatureTransformer"):
        assert sk.TemporalFeatures is sk.FeatureTransformer
