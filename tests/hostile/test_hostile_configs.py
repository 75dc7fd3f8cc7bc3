"""Issue 26, points 6 and 7 (strict values, one-line errors) for configs and run documents:
every config's ``from_dict`` (TemporalFeaturesConfig, TrainConfig, ChangePointConfig,
ForecastConfig and its ODEConfig) is strict outside the CLI, and a damaged ``config.json``
or ``data.json`` of a real run folder is a RunError (CLI: exit 2, one line) for
``evaluate`` and ``compare`` and the app's run loading, never a traceback or a coercion.

The bad values are generated per field from each dataclass's declared types (the class of
mistake, not a list of examples): a bool for a number, a string for a number, a list of
floats for a whole number, NaN and infinity, a number for text or a flag, an unknown key.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import typing

import pytest

from cvx_core.analysis.changepoints import ChangePointConfig
from cvx_core.cli import main
from cvx_core.data.io import save_trajectories
from cvx_core.data.strict import strict_fields
from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.features.ode import ODEConfig
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.forecast import ForecastConfig
from cvx_core.learn.runs import RunError, load_run

CONFIGS = [TemporalFeaturesConfig, TrainConfig, ChangePointConfig, ForecastConfig]


def _base_type(hint):
    """The non-None member of ``X | None`` (and the hint itself otherwise)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
        return args[0]
    return hint


def _wrong_values(hint) -> list:
    base = _base_type(hint)
    if base is bool:
        return [1, "true", [True]]
    if base is int:
        return [True, 3.0, 3.5, "3", [1.0], float("nan")]
    if base is float:
        return [True, "0.1", float("nan"), float("inf"), -float("inf"), [0.1]]
    if base is str:
        return [3, True, ["a"]]
    if typing.get_origin(base) is typing.Literal:
        return ["not-an-option", 1, True]
    return []


def _cases():
    for cls in CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for bad in _wrong_values(hints[f.name]):
                yield pytest.param(cls, f.name, bad, id=f"{cls.__name__}.{f.name}={bad!r}")


@pytest.mark.parametrize("cls, field, bad", list(_cases()))
def test_from_dict_refuses_a_wrongly_typed_field_in_one_line_naming_it(cls, field, bad):
    with pytest.raises(ValueError) as info:
        cls.from_dict({field: bad})
    message = str(info.value)
    assert "\n" not in message and field in message, message


@pytest.mark.parametrize("cls", CONFIGS + [ODEConfig])
def test_from_dict_refuses_unknown_keys_and_non_objects(cls):
    reader = getattr(cls, "from_dict", None) or (lambda d: cls(**strict_fields(cls, d)))
    with pytest.raises(ValueError, match="unknown .*not_a_field"):
        reader({"not_a_field": 1})
    for not_an_object in ([1, 2], "x", 3):
        with pytest.raises(ValueError, match="expected an object"):
            reader(not_an_object)


@pytest.mark.parametrize("cls", CONFIGS)
def test_from_dict_round_trips_every_default_config(cls):
    cfg = cls()
    assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("cls, field, value", [
    (TemporalFeaturesConfig, "min_dt", -1.0), (TemporalFeaturesConfig, "scales", [1.0, -7.0]),
    (TemporalFeaturesConfig, "scales", []), (TemporalFeaturesConfig, "ode_steps", 0),
    (TemporalFeaturesConfig, "ode_latent_dim", -2), (TemporalFeaturesConfig, "burst_window", 0),
    (TrainConfig, "epochs", -1), (TrainConfig, "batch_size", 0), (TrainConfig, "hidden", -5),
    (TrainConfig, "max_len", -3), (TrainConfig, "eval_batch_size", 0), (TrainConfig, "bootstrap", -1),
    (ChangePointConfig, "min_size", 0), (ChangePointConfig, "n_permutations", -4),
    (ForecastConfig, "epochs", -150), (ForecastConfig, "batch_size", 0), (ForecastConfig, "max_len", 0),
    (ForecastConfig, "lr", -0.01),
])
def test_from_dict_refuses_negative_and_zero_sizes(cls, field, value):
    with pytest.raises(ValueError) as info:
        cls.from_dict({field: value})
    assert field in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("nested", [{"ode": {"latent_dim": "16"}}, {"ode": {"steps": 4.0}},
                                    {"ode": {"adjoint": "no"}}, {"ode": {"unknown": 1}}, {"ode": [16]}])
def test_forecast_config_checks_its_nested_ode_config(nested):
    with pytest.raises(ValueError):
        ForecastConfig.from_dict(nested)


def test_train_config_checks_its_nested_features_strictly():
    with pytest.raises(ValueError, match="TemporalFeaturesConfig.cp_threshold"):
        TrainConfig.from_dict({"features": {"cp_threshold": True}})
    with pytest.raises(ValueError, match="TemporalFeaturesConfig.scales"):
        TrainConfig.from_dict({"features": {"scales": [1, "7"]}})


def test_the_constructor_refuses_bools_for_numbers_too():
    for kw in ({"min_dt": True}, {"cp_threshold": False}, {"ode_steps": True}, {"scales": (True, 7.0)},
               {"ode_adjoint": "yes"}, {"pareto_fraction": "0.5"}):
        with pytest.raises(ValueError):
            TemporalFeaturesConfig(**kw)


# -- a real run folder, damaged ------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged_runs")
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=24, dim=4, n_planted=1, mean_posts=6,
                                                             max_posts=8), seed=3, name="c")
    data = save_trajectories(ts, d / "data.parquet")
    assert main(["train", str(data), "--out", str(d / "run"), "--epochs", "1"]) == 0
    return d, data


def _set(doc: dict, path: list[str], value) -> dict:
    doc = copy.deepcopy(doc)
    obj = doc
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    return doc


DAMAGE = [
    ("config.json", ["train_config", "hidden"], 64.5),
    ("config.json", ["train_config", "features", "cp_threshold"], True),
    ("config.json", ["train_config", "unknown_key"], 1),
    ("config.json", ["model_spec", "dim"], "4"),
    ("config.json", ["model_spec", "dim"], 10**12),
    ("config.json", ["model_spec", "classes"], "ab"),
    ("config.json", ["model_spec", "hidden"], -3),
    ("config.json", ["model_spec", "dropout"], "0.1"),
    ("config.json", ["model_spec", "features"], {"scales": [1, None]}),
    ("config.json", ["model_spec", "magnitude_inputs"], "yes"),
    ("data.json", ["split"], [1, 2]),
    ("data.json", ["split"], {"test": 5}),
    ("data.json", ["split"], {"test": [1, 2]}),
    ("data.json", ["classes"], "x"),
    ("data.json", ["summary"], 3),
]


@pytest.mark.parametrize("fname, path, value", DAMAGE, ids=[f"{f}:{'.'.join(p)}={v!r}" for f, p, v in DAMAGE])
def test_a_damaged_run_document_is_a_run_error_and_one_cli_line(trained, tmp_path, capsys, fname, path, value):
    d, data = trained
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    doc = json.loads((run / fname).read_text())
    (run / fname).write_text(json.dumps(_set(doc, path, value)))
    with pytest.raises(RunError) as info:
        load_run(run)
    assert fname in str(info.value) and "\n" not in str(info.value)
    for argv in (["evaluate", str(run), str(data)], ["compare", str(run), str(data), "--permutations", "99"]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fname in err[0], err
        assert "Traceback" not in err[0]


def test_the_apps_run_loading_turns_a_damaged_run_into_a_run_error(trained, tmp_path):
    from cvx_app import cache
    from cvx_app.workspace import run_documents

    d, _ = trained
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    (run / "data.json").write_text(json.dumps({"split": [1, 2]}))
    with pytest.raises(RunError, match="data.json"):
        cache.load_run(run)
    assert run_documents(run)["data"] == {"split": [1, 2]}  # shown as written, never executed


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_weights_that_are_a_fifo_or_a_device_are_no_weights_not_a_blocked_read(trained, tmp_path, kind):
    import os
    import threading

    d, data = trained
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    (run / "model.pt").unlink()
    if kind == "fifo":
        os.mkfifo(run / "model.pt")
    else:
        (run / "model.pt").symlink_to("/dev/zero")
    box = {}

    def attempt():
        try:
            load_run(run)
        except RunError as exc:
            box["error"] = exc

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "load_run blocked on model.pt"
    assert "model.pt" in str(box["error"])
    assert main(["evaluate", str(run), str(data)]) == 2


@pytest.mark.parametrize("bad", [True, 2.5, "3", 0, -1, None])
def test_library_size_options_are_whole_numbers_never_rounded(trained, tmp_path, bad):
    from cvx_core.data.text import embed_texts, load_encoder
    from cvx_core.scale.chunks import iter_user_chunks
    from cvx_core.scale.stream import extract_stream

    _, data = trained
    for option in ("chunk_users", "batch_rows", "partition_bytes"):
        with pytest.raises(ValueError, match=option):
            next(iter_user_chunks(data, **{option: bad}))
    with pytest.raises(ValueError, match="chunk_users"):
        extract_stream(data, tmp_path / "f.parquet", chunk_users=bad)
    assert not (tmp_path / "f.parquet").exists()
    with pytest.raises(ValueError, match="batch_size"):
        embed_texts(["a"], encoder=lambda texts: [[1.0]] * len(texts), batch_size=bad)
    with pytest.raises(ValueError, match="max_tokens"):
        load_encoder("minilm", max_tokens=bad)


@pytest.mark.parametrize("cls, field, value", [
    (TemporalFeaturesConfig, "ode_steps", 10**9), (TemporalFeaturesConfig, "ode_latent_dim", 10**7),
    (TemporalFeaturesConfig, "ode_input_dim", 10**7), (TemporalFeaturesConfig, "scales", [1.0] * 1000),
    (TemporalFeaturesConfig, "cp_threshold", 10**400), (TrainConfig, "epochs", 10**400),
    (TrainConfig, "lr", 10**400), (ChangePointConfig, "seed", 2**64), (ForecastConfig, "epochs", 10**30),
])
def test_from_dict_refuses_sizes_no_run_could_finish_and_numbers_beyond_64_bits(cls, field, value):
    with pytest.raises(ValueError) as info:
        cls.from_dict({field: value})
    assert field in str(info.value) and "\n" not in str(info.value)
