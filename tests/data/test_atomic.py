"""Atomic writes: a failed write keeps the old file, leaves no temporary, and files are readable."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cvx_core.data.atomic import atomic_replace, atomic_write_bytes, atomic_write_json


def test_a_write_that_fails_halfway_keeps_the_old_file_intact(tmp_path):
    path = tmp_path / "model.pt"
    atomic_write_bytes(path, b"good")

    def half_then_fail(fh):
        fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_replace(path, half_then_fail)
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_written_files_get_ordinary_permissions_not_the_temporary_files_private_ones(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_json_is_written_with_numpy_values_converted_and_nan_as_null(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"auc": np.float32(0.5), "n": np.int64(3), "bad": float("nan")})
    assert json.loads(path.read_text()) == {"auc": 0.5, "n": 3, "bad": None}
