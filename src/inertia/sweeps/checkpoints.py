"""Checkpoint files of stacks in training: ``<out>/checkpoints/<study>/batch-NNNNNN.pt@HOLDER``.

- The folder belongs to one study (its name, storage and signature make the folder's name), so
  two studies in one ``--out`` never see each other's files.
- A file's name says which process holds it (``host:pid:start``, :mod:`.processes`). A worker
  claims the files whose process is gone (:meth:`Checkpoints.orphans`, by an atomic rename).
- A file is written whole or not at all (a temporary file, fsync, rename, fsync of the folder)
  and carries a SHA-256 of its contents and the study's signature: :meth:`Checkpoints.load`
  raises :class:`CheckpointError` for a file that fails either check, and
  :meth:`Checkpoints.reject` moves it aside into ``rejected/``.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from .engine import Members
from .processes import alive, me
from .specs import signature_difference

MAGIC = b"inertia-checkpoint-2\n"


class CheckpointError(ValueError):
    """A checkpoint that must not be used: damaged, cut short, or another study's."""


def signature_text(signature: dict[str, Any]) -> str:
    """The signature as canonical JSON (the form compared on load)."""
    return json.dumps(signature, sort_keys=True, default=str)


@dataclass
class Checkpoints:
    """The checkpoint folder of one study (``<out>/checkpoints/<name>-<hash>``), made when first used."""

    out: str
    signature: dict[str, Any]
    study: str = "sweep"            # the study's name and storage: part of the folder's name
    storage: str = ""

    def folder(self) -> str:
        digest = hashlib.sha256(f"{self.storage}\n{self.study}\n{signature_text(self.signature)}".encode())
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.study)[:40] or "study"
        path = os.path.join(self.out, "checkpoints", f"{name}-{digest.hexdigest()[:12]}")
        os.makedirs(path, exist_ok=True)
        return path

    def path_for(self, first: int) -> str:
        """The file this process writes for a stack whose first trial is number ``first``."""
        return os.path.join(self.folder(), f"batch-{first:06d}.pt@{me()}")

    def save(self, members: Members, path: str) -> None:
        """Write ``members`` to ``path`` atomically, with its checksum and the study's signature."""
        buffer = io.BytesIO()
        torch.save({"members": members.state_dict(), "signature": signature_text(self.signature)}, buffer)
        payload = buffer.getvalue()
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(os.path.dirname(path))

    def load(self, path: str) -> dict[str, Any]:
        """The members' state dict ``path`` holds (``keys``: trial numbers, ``configs``, ...).

        Raises :class:`CheckpointError` for a damaged or cut-short file, or another study's.
        """
        with open(path, "rb") as f:
            blob = f.read()
        head, _, rest = blob.partition(b"\n")
        digest, _, payload = rest.partition(b"\n")
        if head + b"\n" != MAGIC or hashlib.sha256(payload).hexdigest().encode() != digest:
            raise CheckpointError("damaged or cut short (checksum mismatch)")
        try:
            stored = torch.load(io.BytesIO(payload), weights_only=False)
        except Exception as error:
            raise CheckpointError(f"unreadable: {type(error).__name__}: {error}") from None
        if stored.get("signature") != signature_text(self.signature):
            difference = signature_difference(str(stored.get("signature")), signature_text(self.signature))
            raise CheckpointError(f"it belongs to another sweep ({difference})")
        return stored["members"]

    def reject(self, path: str) -> str:
        """Move ``path`` aside into ``rejected/`` (never used again); its new path."""
        folder = os.path.join(self.folder(), "rejected")
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, os.path.basename(path))
        os.replace(path, target)
        return target

    def orphans(self) -> list[str]:
        """Checkpoint files whose holding process is gone, claimed by renaming (atomic); the
        temporary files of writes that were cut short are removed."""
        mine = []
        for path in sorted(glob.glob(os.path.join(self.folder(), "batch-*.pt@*"))):
            base, _, holder = path.partition(".pt@")
            if holder.endswith(".tmp"):
                if not alive(holder[:-4]):
                    _remove(path)
                continue
            if holder == me() or alive(holder):
                continue
            target = f"{base}.pt@{me()}"
            try:
                os.rename(path, target)
            except OSError:
                continue  # another worker took it
            mine.append(target)
        return mine


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
