"""Replace files and directories so that a crash never leaves a half-written one under the
final name: write beside the target (``<name>.partial``), then rename.

A file is replaced by one atomic ``os.replace``. A directory cannot be renamed over another, so the
old one moves to ``<name>.old`` first and is removed after; a crash between the two renames leaves
``<name>.old`` (complete) and no ``<name>``, which readers such as
:func:`lit_qwen3.runtime.checkpointing.resume_checkpoint` accept.
"""

from __future__ import annotations

import os
import shutil

PARTIAL, OLD = ".partial", ".old"


def remove(path: str | os.PathLike) -> None:
    """Delete a file, symlink or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def replace_atomically(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move ``source`` (a finished ``.partial``) onto ``target``, replacing what was there."""
    source, target = os.fspath(source), os.fspath(target)
    if not os.path.isdir(source):
        os.replace(source, target)
        return
    old = target + OLD
    remove(old)
    if os.path.lexists(target):
        os.replace(target, old)
    os.replace(source, target)
    remove(old)
