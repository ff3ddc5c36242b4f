"""Atomic writes: the destination holds the old file or the new one, never a partial one."""

from __future__ import annotations

import json

import pytest

from audiodiff.io.files import write_atomically, write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json(target, {"a": 1})

    def half_then_crash(tmp):
        tmp.write_text('{"a": 2, "b"')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half_then_crash)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_write_json_refuses_nan_unless_allowed(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"v": float("nan")})
    assert not list(tmp_path.iterdir())
    write_json(tmp_path / "x.json", {"v": float("nan")}, allow_nan=True)
    assert "NaN" in (tmp_path / "x.json").read_text()


def test_written_files_get_the_umask_mode_even_from_writers_that_make_them_private(tmp_path):
    import os
    import stat

    def private_writer(tmp):  # safetensors creates its files 0600
        tmp.write_bytes(b"x")
        os.chmod(tmp, 0o600)

    path = write_atomically(tmp_path / "model.safetensors", private_writer)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
