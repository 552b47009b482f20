"""Durable audio storage: an upload is on disk (fsynced) before its job is accepted.

The root is a directory every node can read; on a multi-node cluster point it at a shared
filesystem (NFS, EFS, a mounted bucket).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO


class AudioStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str) -> Path:
        # Only UUIDs map to files, so no id can name a path outside the root.
        name = uuid.UUID(job_id).hex
        return self.root / name[:2] / f"{name}.audio"

    def save(self, job_id: str, source: BinaryIO) -> Path:
        """Copy `source` to storage atomically and durably; returns the final path."""
        target = self.path(job_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".part{os.getpid()}")
        try:
            with partial.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash
        finally:
            os.close(dir_fd)
        return target

    def exists(self, job_id: str) -> bool:
        return self.path(job_id).exists()

    def delete(self, job_id: str) -> None:
        self.path(job_id).unlink(missing_ok=True)
