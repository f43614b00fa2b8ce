"""Writing a stage's outputs so that a failure never leaves a partial set.

Every file goes to a hidden temporary file beside its destination and is renamed into place
only when it is complete. Files that belong together (a checkpoint and its pictures, a report
and its grids) share one `Outputs` group, opened by `written_together()` and handed to each
writer: they appear together when the block ends, or (on any error, a full disk included) none
does and every temporary file is removed, so that an existing good output is never replaced by
a partial set. A writer given no group writes its file on its own at once (a training
snapshot, a metrics log). An OSError while writing or renaming becomes one LdmError naming the
file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import LdmError


def _folder_error(folder: Path, e: OSError) -> LdmError:
    return LdmError(f"{folder}: cannot write output folder ({e.strerror or e})")


def write_error(path: str | os.PathLike, e: OSError) -> LdmError:
    """An OSError met while writing `path` as the one line a user reads."""
    if e.errno == errno.ENOSPC:
        return LdmError(f"no space left on device writing {path}")
    return LdmError(f"cannot write {path} ({e.strerror or e})")


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise LdmError(f"{path}: is a directory; name a file to write")


def _nearest_existing(path: Path) -> Path:
    """`path` (absolute) or its nearest ancestor that exists: where a new output would land."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def check_folder_writable(folder: str | os.PathLike) -> None:
    """Fail before any work is done if an output folder cannot be created or written: its nearest
    existing ancestor must be a folder that takes a new file. Nothing is created, so that a
    command refused later leaves no folder behind (the writers create folders as they write)."""
    folder = Path(folder)
    existing = _nearest_existing(folder)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(existing))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise _folder_error(folder, e) from e


def check_disk_space(path: str | os.PathLike, nbytes: int, what: str) -> None:
    """Refuse, before any work, an output of `nbytes` larger than the free space where `path`
    goes (its nearest existing folder): it could never be written."""
    existing = _nearest_existing(Path(path).parent)
    free = shutil.disk_usage(existing).free
    if nbytes > free:
        raise LdmError(f"{path}: {what} would take {nbytes / 2**30:,.1f} GiB, {existing} has "
                       f"{free / 2**30:,.1f} GiB free")


@contextlib.contextmanager
def folder_made_for(folder: str | os.PathLike) -> Iterator[Path]:
    """Create `folder` (and missing parents) for the block; those created are removed again if the
    block leaves them empty (a refused or failed run), so that it leaves no folder behind."""
    folder = Path(folder)
    missing = []
    ancestor = folder.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _folder_error(folder, e) from e
    try:
        yield folder
    finally:
        for created in missing:  # deepest first
            try:
                created.rmdir()
            except OSError:  # not empty: the run wrote there
                break


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path once links and `..` are resolved, or two
    names (hard links) of one existing file."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_distinct(outputs, inputs: dict[str, object] | None = None) -> None:
    """Refuse outputs that would destroy an input, or each other: two outputs on one file, or an
    output on a file the stage reads (`inputs`: the flag that names it, to a path or a list of
    paths)."""
    outputs = [Path(p) for p in outputs]
    for i, path in enumerate(outputs):
        for other in outputs[:i]:
            if _same_file(path, other):
                raise LdmError(f"{path}: two outputs of this stage would be written there ({other} and {path}); "
                               "give them different paths")
    for flag, paths in (inputs or {}).items():
        for source in paths if isinstance(paths, (list, tuple)) else [paths]:
            for path in outputs:
                if _same_file(path, Path(source)):
                    raise LdmError(f"{path}: is {flag} {source}, which this stage reads; an output must not "
                                   "replace an input")


def check_writable(*paths: str | os.PathLike, inputs: dict[str, object] | None = None) -> None:
    """Fail before any work is done if an output would overwrite an input or another output
    (check_distinct), names a directory, or its folder cannot be created or written."""
    check_distinct(paths, inputs)
    for path in paths:
        path = Path(path)
        _refuse_directory(path)
        check_folder_writable(path.parent)


class Outputs:
    """Files being written together: each to a hidden temporary file beside it, renamed into place
    by `commit` only when all are written."""

    def __init__(self):
        self.pending: list[tuple[Path, Path]] = []  # (temporary file, destination)

    def reserve(self, path: Path) -> Path:
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise _folder_error(folder, e) from e
        os.close(fd)
        self.pending.append((Path(tmp), path))
        return Path(tmp)

    def commit(self) -> None:
        for _, path in self.pending:  # before the first rename, so that none happens
            _refuse_directory(path)
        mask = os.umask(0)  # mkstemp makes files private; give them the mode any new file gets
        os.umask(mask)
        for tmp, path in self.pending:
            try:
                os.chmod(tmp, 0o666 & ~mask)
                os.replace(tmp, path)
            except OSError as e:
                raise write_error(path, e) from e

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def written_together() -> Iterator[Outputs]:
    """A group for the writers called inside the block: its files appear together when the block
    ends without error, or none does."""
    group = Outputs()
    try:
        yield group
        group.commit()
    finally:
        group.discard()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, outputs: Outputs | None = None) -> Iterator[Path]:
    """Yield a temporary path in the same folder as `path`; it is renamed into place when `outputs`
    commits, or (without a group) as soon as the write succeeds.

    An interrupted write leaves at most a hidden temporary file, never a truncated `path` that a
    later stage would accept. An OSError while writing becomes one LdmError naming `path`.
    """
    path = Path(path)
    with contextlib.nullcontext(outputs) if outputs is not None else written_together() as group:
        tmp = group.reserve(path)
        try:
            yield tmp
        except OSError as e:
            raise write_error(path, e) from e


def write_text_atomic(path: str | os.PathLike, text: str, outputs: Outputs | None = None) -> None:
    with atomic_path(path, outputs) as tmp:
        tmp.write_text(text)


def write_study(out_dir: str | os.PathLike, stem: str, report: dict, markdown: str,
                draw: Callable[[Path, Outputs], None], caption: str) -> None:
    """A study's three files, written together into `out_dir`: <stem>.json (the report),
    <stem>.png (drawn by `draw(path, outputs)`) and <stem>.md (the table, then the picture)."""
    out_dir = Path(out_dir)
    with written_together() as outputs:
        draw(out_dir / f"{stem}.png", outputs)
        write_text_atomic(out_dir / f"{stem}.json", json.dumps(report, indent=2) + "\n", outputs)
        write_text_atomic(out_dir / f"{stem}.md", f"{markdown}\n![{caption}]({stem}.png)\n", outputs)
