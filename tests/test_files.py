"""`encodec_hf.files.atomic_path`: the result appears complete or not at all, with the user's umask."""

from __future__ import annotations

import os
import stat

import pytest

from encodec_hf.files import atomic_path, write_text_atomic


def test_success_replaces_and_keeps_the_umask(tmp_path):
    target = tmp_path / "out.wav"
    target.write_text("old")
    previous = os.umask(0o027)
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".wav" and tmp.name.startswith(".")
            tmp.write_text("new")
            assert target.read_text() == "old"  # nothing under the real name until the block succeeds
    finally:
        os.umask(previous)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # 0o666 minus the umask, as open() would give
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "plan.json"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_text_atomic(target, "{}")
    assert target.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_errors_name_the_folder_and_file_not_the_temporary_name(tmp_path):
    missing = tmp_path / "no" / "out.ecdc"
    with pytest.raises(FileNotFoundError) as info, atomic_path(missing):
        pass
    assert str(info.value) == f"Cannot write out.ecdc in folder {missing.parent}: No such file or directory."
    assert info.value.errno == 2
    target = tmp_path / "out.wav"
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:  # e.g. the disk filled up mid-write
        raise OSError(28, "No space left on device", str(tmp))
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    assert list(tmp_path.iterdir()) == []
