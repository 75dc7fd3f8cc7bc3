"""Hostile configs in training: features that overflow (an extreme ``min_dt`` on posts at one
instant) are refused before any fitting, naming the data, the user and the feature, with the
message ``extract`` gives, by the library ``Trainer`` (train, validation and test users), the
scikit-learn estimator and the CLI ``train`` (one error line, no run files) — never
scikit-learn's "Input contains NaN" after the split and the head choice.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from cvx_core.cli import main
from cvx_core.data.io import save_trajectories
from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.trainer import Trainer
from cvx_core.scale.stream import features_frame

DAY_US = 86_400 * 10**6


def _set(bad_user: str | None = "u7", n: int = 24, name: str = "od") -> TrajectorySet:
    """``n`` users of 5 posts a day apart; ``bad_user`` has its posts at one instant."""
    rng = np.random.default_rng(0)
    trajs = []
    for u in range(n):
        uid = f"u{u}"
        steps = np.zeros(5, dtype=np.int64) if uid == bad_user else np.arange(5, dtype=np.int64)
        dts = np.datetime64("2024-01-01", "us") + (steps * DAY_US).astype("timedelta64[us]")
        trajs.append(Trajectory(uid, rng.normal(size=(5, 3)).astype(np.float32), dts, label=u % 2))
    return TrajectorySet(trajs, name=name)


def _config(min_dt: float, **kw) -> TrainConfig:
    return TrainConfig(epochs=1, features=TemporalFeaturesConfig(min_dt=min_dt, scales=(1.0, 7.0)), **kw)


@pytest.mark.parametrize("min_dt", [1e-300, 1e-20])
def test_trainer_refuses_overflowing_features_before_any_fitting_naming_user_and_feature(tmp_path, min_dt):
    trainer = Trainer(_set(), _config(min_dt), run_dir=tmp_path / "run")
    with pytest.raises(ValueError) as e:
        trainer.fit()
    msg = str(e.value)
    assert msg.startswith("od: user 'u7': feature ") and "is not finite although the posts are" in msg
    assert f"min_dt {min_dt}" in msg and "raise min_dt" in msg and "Input contains NaN" not in msg
    assert trainer.head is None and trainer.model is None  # no head chosen, no model built
    assert not (tmp_path / "run" / "config.json").exists()  # nothing written


def test_training_and_extract_give_the_same_refusal_when_float64_overflows_too():
    ts, cfg = _set(), _config(1e-300, feature_dtype="float64")
    with pytest.raises(ValueError) as extract:
        features_frame(ts, cfg.features)
    with pytest.raises(ValueError) as train:
        Trainer(ts, cfg).fit()
    assert str(train.value) == str(extract.value)


def test_a_float32_overflow_that_float64_holds_says_so_and_float64_trains_past_the_check():
    ts = _set()
    with pytest.raises(ValueError, match="in float32; feature_dtype='float64'"):
        Trainer(ts, _config(1e-20)).fit()
    assert features_frame(ts, _config(1e-20).features).shape[0] == len(ts)  # extract holds it in float64


def test_an_overflowing_user_in_a_given_test_set_is_refused_too():
    train, test = _set(bad_user=None), _set(bad_user="u3", n=6, name="test")
    test = TrajectorySet([Trajectory(f"t{tr.user_id}", tr.embeddings, tr.datetimes, label=tr.label) for tr in test])
    with pytest.raises(ValueError, match="user 'tu3': feature"):
        Trainer(train, _config(1e-300), test_data=test).fit()


def test_ordinary_min_dt_passes_the_check_on_the_same_posts():
    trainer = Trainer(_set(), _config(1.0 / 1440.0))
    split = trainer.make_split()
    trainer.prepare_model(split)  # the probe, the check and the head choice, no training step
    assert trainer.head is not None


def test_cli_train_refuses_in_one_line_naming_user_and_feature_and_writes_no_run(tmp_path):
    data = save_trajectories(_set(), tmp_path / "od.parquet")
    (tmp_path / "tiny.json").write_text(json.dumps({"min_dt": 1e-300, "scales": [1.0, 7.0]}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                     "--config", str(tmp_path / "tiny.json")])
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].count("error:") == 1, lines
    assert "user 'u7': feature " in lines[0] and "not finite" in lines[0] and "min_dt" in lines[0]
    assert "Traceback" not in err.getvalue() and "Input contains NaN" not in err.getvalue()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_sklearn_classifier_refuses_the_same_way():
    from cvx_core.sklearn import TemporalClassifier

    ts = _set()
    clf = TemporalClassifier(epochs=1, features={"min_dt": 1e-300, "scales": [1.0, 7.0]})
    with pytest.raises(ValueError, match="od: user 'u7': feature .* is not finite although the posts are"):
        clf.fit(ts)
    assert not hasattr(clf, "model_")


def test_the_sklearn_feature_transformer_refuses_instead_of_passing_inf_down_the_pipeline():
    from cvx_core.sklearn import FeatureTransformer

    ts = _set()
    ft = FeatureTransformer(features={"min_dt": 1e-300, "scales": [1.0, 7.0]}).fit(ts)
    with pytest.raises(ValueError, match="od: user 'u7': feature .* is not finite although the posts are"):
        ft.transform(ts)
    assert np.isfinite(FeatureTransformer(features={"scales": [1.0, 7.0]}).fit_transform(ts)).all()
