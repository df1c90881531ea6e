"""Atomic file writes: a result appears under its final name complete, or not at all.

Every writer of encodec_hf that produces a file (the command line's outputs, codes files, ONNX graphs, dataset
shards and their plan and manifest) writes to a temporary file in the destination folder and renames it over the
destination only when the write succeeded, so a crash or an error never leaves a partial file under the real name
(a rename within one folder is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The temporary name keeps ``path``'s suffix (soundfile and friends pick the format from it) and is hidden
    (``.name.<random>.partial.suffix``). The file is created empty with mode ``0o666`` minus the user's umask, as
    ``open(path, "w")`` would create it, so the result has the permissions the user expects.
    An ``OSError`` names ``path`` and its folder, never the temporary name the user did not choose.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as for open()
    except OSError as err:
        # A read-only, missing or full folder: say which folder, not which temporary file.
        named = type(err)(f"Cannot write {path.name} in folder {path.parent}: {err.strerror or err}.")
        named.errno = err.errno
        raise named from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename in (str(tmp), tmp):  # e.g. the disk filled up while writing: name the real file
            err.filename = str(path)
        if err.filename2 in (str(tmp), tmp):
            err.filename2 = str(path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


__all__ = ["atomic_path", "write_text_atomic"]
