"""Checkpoint files of stacks in training: ``<out>/checkpoints/batch-NNNNNN.pt.claimed-PID-HOST``.

A file's name says which process holds it. A restarted worker claims the files whose process is
gone (:meth:`Checkpoints.orphans`, by an atomic rename) and resumes them; a file is written to
``.tmp`` and renamed, so a write cut short leaves the previous complete checkpoint.
"""
from __future__ import annotations

import glob
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch

from .engine import Members


def host() -> str:
    """This machine's name, usable inside a file name."""
    return socket.gethostname().replace("-", "_").replace(".", "_")


@dataclass
class Checkpoints:
    """The checkpoint folder of one sweep (``<out>/checkpoints``), made when first used."""

    out: str
    signature: dict[str, Any]

    def folder(self) -> str:
        path = os.path.join(self.out, "checkpoints")
        os.makedirs(path, exist_ok=True)
        return path

    def path_for(self, first: int) -> str:
        """The file this process writes for a stack whose first trial is number ``first``."""
        return os.path.join(self.folder(), f"batch-{first:06d}.pt.claimed-{os.getpid()}-{host()}")

    def save(self, members: Members, path: str) -> None:
        tmp = path + ".tmp"
        torch.save({"members": members.state_dict(), "signature": self.signature}, tmp)
        os.replace(tmp, path)

    @staticmethod
    def load(path: str) -> dict[str, Any]:
        """The members' state dict a checkpoint holds (``keys``: trial numbers, ``configs``, ...)."""
        return torch.load(path, weights_only=False)["members"]

    def orphans(self) -> list[str]:
        """Checkpoint files whose owning process is gone, claimed by renaming (atomic)."""
        mine = []
        for path in sorted(glob.glob(os.path.join(self.folder(), "batch-*.pt*"))):
            if path.endswith(".tmp"):
                continue  # a write cut short; the previous complete checkpoint is next to it
            base, _, owner = path.partition(".pt")
            owner = owner.lstrip(".")
            if owner.startswith("claimed-"):
                try:
                    pid = int(owner.split("-")[1])
                except ValueError:
                    pid = -1
                if pid == os.getpid() or _alive(pid, owner):
                    continue
            elif owner.startswith("tmp"):
                continue
            target = f"{base}.pt.claimed-{os.getpid()}-{host()}"
            try:
                os.rename(path, target)
            except OSError:
                continue  # another worker took it
            mine.append(target)
        return mine


def _alive(pid: int, owner: str) -> bool:
    """Is the process that claimed a checkpoint still running (on this host)?"""
    parts = owner.split("-", 2)
    where = parts[2] if len(parts) > 2 else host()
    if where != host():
        return True  # another machine's worker: assume alive
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (killed but not reaped) is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
