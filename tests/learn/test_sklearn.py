"""cvx_core.sklearn: FeatureTransformer passes scikit-learn's estimator checks and equals the
analytic path; TemporalClassifier fits arrays, sets and DataFrames, works in Pipeline and
GridSearchCV, and passes the estimator checks that apply to a trainer-backed classifier."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.features.analytic import AnalyticBackend, feature_names
from cvx_core.sklearn import TemporalClassifier, FeatureTransformer, as_trajectory_set

FAST = dict(epochs=2, patience=2, hidden=0, head="linear", batch_size=16)


@pytest.fixture(scope="module")
def planted():
    return make_planted_trajectory_set(config=PlantedConfig(n_users=40, dim=6, n_planted=2, mean_posts=8,
                                                            max_posts=12), seed=7)[0]


def test_temporal_features_passes_the_scikit_learn_estimator_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(FeatureTransformer(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed and len(results) > 30


def test_temporal_features_equal_the_analytic_path_on_sets_and_dataframes(planted):
    tf = FeatureTransformer().fit(planted)
    x = tf.transform(planted)
    tr = planted.at(2)
    np.testing.assert_allclose(x[2], AnalyticBackend.extract_all(tr.embeddings, tr.timestamps), rtol=1e-12)
    assert list(tf.get_feature_names_out()) == feature_names(planted.dim)
    rows = [{"user_id": t.user_id, "timestamp": d, "embedding": e.tolist()}
            for t in planted for d, e in zip(t.datetimes, t.embeddings)]
    np.testing.assert_allclose(tf.transform(pd.DataFrame(rows)), x, rtol=1e-12)


def test_features_in_a_pipeline_with_a_logistic_regression(planted):
    pipe = make_pipeline(FeatureTransformer(), StandardScaler(), LogisticRegression(max_iter=500))
    pipe.fit(planted, planted.labels)
    assert pipe.score(planted, planted.labels) > 0.7


def test_classifier_fits_sets_with_any_labels_and_predicts_them(planted):
    names = np.array(["calm", "drifting"])[planted.labels]
    clf = TemporalClassifier(**FAST).fit(planted, names)
    assert set(clf.classes_) == {"calm", "drifting"}
    proba = clf.predict_proba(planted)
    assert proba.shape == (len(planted), 2) and np.allclose(proba.sum(1), 1.0)
    assert set(clf.predict(planted)) <= {"calm", "drifting"} and clf.head_ == "linear"


def test_classifier_fit_does_only_the_fit_no_baseline_bootstrap_or_early_detection(planted, monkeypatch):
    from cvx_core.learn import trainer as trainer_mod

    calls = []

    def refuse(name):
        def fn(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"TemporalClassifier.fit ran the {name} step")
        return fn

    for name in ("evaluation_step", "baseline_step", "interval_step", "warning_step", "early_step", "cross_validate"):
        monkeypatch.setattr(trainer_mod, name, refuse(name))
    monkeypatch.setattr(trainer_mod.Trainer, "baseline", refuse("baseline"))
    clf = TemporalClassifier(**{**FAST, "head": "auto"}).fit(planted, planted.labels)
    assert not calls and clf.predict_proba(planted).shape == (len(planted), 2)
    assert clf.head_choice_  # the head was still chosen (by inner CV), which is part of the fit
    with pytest.raises(AssertionError, match="evaluation_step"):  # the same hooks do fire in a full run
        trainer_mod.train(planted, clf._train_config())


def test_classifier_in_grid_search_over_the_head_strength():
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    X = rng.normal(size=(24, 6, 2)).cumsum(axis=1) + y[:, None, None] * 1.5
    grid = GridSearchCV(TemporalClassifier(**FAST), {"head_c": [0.1, 10.0]}, cv=2)
    grid.fit(X, y)
    assert grid.best_params_["head_c"] in (0.1, 10.0) and grid.score(X, y) > 0.7
    assert as_trajectory_set(X).dim == 2


def test_classifier_passes_the_estimator_checks_that_apply():
    from sklearn.utils import estimator_checks as ec

    clf = TemporalClassifier(**FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for check in (ec.check_no_attributes_set_in_init, ec.check_get_params_invariance, ec.check_set_params,
                      ec.check_estimators_unfitted, ec.check_fit2d_1sample,
                      ec.check_dict_unchanged, ec.check_dont_overwrite_parameters):
            try:
                check(type(clf).__name__, clf)
            except ValueError as exc:  # a single sample cannot be split into train and validation
                assert check is ec.check_fit2d_1sample and "class" in str(exc), exc
