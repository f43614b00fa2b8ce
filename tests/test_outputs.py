"""Atomic outputs: files written together appear together or not at all, a failed write is one
line naming the file, and no temporary file survives."""

import errno
import os

import pytest

from ldm.errors import LdmError
from ldm.outputs import atomic_path, write_text_atomic, written_together


def test_files_written_together_appear_only_when_all_are_written(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError):
        with written_together() as outputs:
            write_text_atomic(tmp_path / "a.txt", "new a", outputs)
            write_text_atomic(tmp_path / "b.txt", "new b", outputs)
            assert (tmp_path / "a.txt").read_text() == "old a"  # nothing is renamed before the end
            raise RuntimeError("the stage fails after writing two of its outputs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"
    with written_together() as outputs:
        write_text_atomic(tmp_path / "a.txt", "new a", outputs)
        write_text_atomic(tmp_path / "b.txt", "new b", outputs)
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["new a", "new b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_failed_write_is_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    (tmp_path / "report.json").write_text("good")
    with pytest.raises(LdmError, match=f"^no space left on device writing {tmp_path / 'report.json'}$"):
        with atomic_path(tmp_path / "report.json") as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(LdmError, match=f"^cannot write {tmp_path / 'x.png'} \\(Permission denied\\)$"):
        with atomic_path(tmp_path / "x.png"):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"] and (tmp_path / "report.json").read_text() == "good"


def test_a_directory_in_the_way_stops_the_group_before_any_rename(tmp_path):
    (tmp_path / "b.txt").mkdir()
    with pytest.raises(LdmError, match="b.txt: is a directory"):
        with written_together() as outputs:
            write_text_atomic(tmp_path / "a.txt", "a", outputs)
            write_text_atomic(tmp_path / "b.txt", "b", outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]


def test_a_write_outside_the_group_lands_at_once(tmp_path):
    """A writer not handed the group (a training snapshot, a metrics log) writes its file as soon
    as it is complete, even inside the block of a group that later fails."""
    with pytest.raises(RuntimeError):
        with written_together() as outputs:
            write_text_atomic(tmp_path / "output.txt", "final", outputs)
            write_text_atomic(tmp_path / "snapshot.txt", "state")
            assert (tmp_path / "snapshot.txt").read_text() == "state"
            raise RuntimeError("the stage fails")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.txt"]
