"""Lanes: stacks of members trained side by side, in threads or in forked processes.

Each lane runs one stack with one intra-op thread (small GEMMs scale better this way, and it
does not collapse when other processes share the cores), subnormal floats flushed to zero
(:func:`_lane_thread`). Members never mix, so the numbers equal one big stack's. What a stack's
training means (pruning, telling, progress) is the :class:`Trainer`'s; this module only places
the work.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from ..threads import choose_threads, usable_cores
from .engine import Job, Members

Part = tuple[list[Any], Members, "str | None"]   # (trials, their stack, its checkpoint file)

CPU_STACK_MEMBERS = {"torch": 16, "openblas": 32}
"""On CPU a claimed batch is cut into stacks of at most this many members (configurations x
folds), by what does the stack's matrix products (:mod:`.gemm`). Measured end to end on the
benchmark's 8 x 8 grid (MLP 40-100-100-10, batch 100, 2 lanes):

- torch (MKL): stacked tensors then stay in cache between the ops of a step. On the 2-core
  AVX2 machine, batched matmuls over 3.8 MB ran at 78 GFLOP/s and over 15 MB at 53, and
  2 x 16-member stacks took 0.87-0.92x the time of 2 x 32; on the AVX-512 one, the same time.
- OpenBLAS (AVX-512, packed operands): 2 x 32-member stacks took 0.93-0.95x the time of
  4 x 16, as per-call overheads count for fewer members."""


class Trainer(Protocol):
    """What a lane asks of the worker whose stacks it trains."""

    tick: float   # seconds a forked lane's parent waits between heartbeats

    def train(self, trials: list[Any], members: Members, path: str | None) -> int:
        """Train a stack to its end in this process and tell its results; how many trials."""

    def train_members(self, members: Members, path: str | None, judge: Callable, progress: Callable) -> list[dict]:
        """Train a stack to its end with ``judge`` (pruning) and ``progress``; its records."""

    def judge(self, trials: list[Any]) -> Callable[[int, dict], list[int]]: ...

    def progress(self, stack: Any, step: int, n_configs: int) -> None: ...

    def tell(self, trials: list[Any], records: list[dict], path: str | None, stack: Any) -> None: ...

    def heartbeat(self) -> None: ...


def lane_count(parallel: int | None, device: str, n_configs: int, threads: int | None = None) -> int:
    """How many stacks train side by side: on CPU one per usable core (each single-threaded), or
    ``threads`` (``--threads``) or ``OMP_NUM_THREADS`` where given. Not fewer on a busy machine: a lane is
    one thread that never spins, so lanes share busy cores fairly, while the load average also counts
    this program's own work that just ended (it halved the README's sweep when read as busy cores)."""
    if parallel is not None:
        return max(1, min(int(parallel), n_configs))
    if not str(device).startswith("cpu"):
        return 1
    return max(1, min(choose_threads(math.inf, threads, free=usable_cores), n_configs))


def stack_count(job: Job, n_configs: int, lanes: int) -> int:
    """Into how many stacks a claimed batch is cut: one per lane, and on CPU small enough that
    a stack's working set stays in cache (:data:`CPU_STACK_MEMBERS`, by what does its products)."""
    if lanes == 1 or not str(job.device).startswith("cpu"):
        return lanes
    return max(lanes, math.ceil(n_configs * job.members_per_config / CPU_STACK_MEMBERS[job.matmul]))


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` contiguous, nearly equal slices (none empty)."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


FORK_MIN_STEPS = 100
"""Stacks of fewer steps train in threads: a fork per stack (and the copies of the pages the parent
then writes while a child shares them) costs more than the GIL's hand-offs save on so short a run."""


def forked_lanes_available(job: Job) -> bool:
    """Lanes as forked processes: on Linux (fork, PR_SET_PDEATHSIG), for CPU jobs."""
    return sys.platform.startswith("linux") and str(job.device).startswith("cpu")


def run_parts(parts: Sequence[Part], lanes: int, where: str, job: Job, trainer: Trainer) -> int:
    """Train every part, ``lanes`` side by side; ``where``: ``processes``, ``threads`` or ``auto``.

    Forked processes where possible: in threads, every call into torch hands the GIL from
    one lane to the other (measured: 5-13 % slower). Returns how many trials were told.
    """
    if not parts:
        return 0
    if len(parts) == 1 or lanes == 1:
        return _run_here(parts, trainer)
    if where == "processes" or (where == "auto" and forked_lanes_available(job) and job.steps >= FORK_MIN_STEPS):
        return _run_forked(list(parts), lanes, trainer)
    if job.backend in SHARED_FORWARD:
        return _run_here(parts, trainer)
    return _run_threads(parts, lanes, trainer)


SHARED_FORWARD = ("vmap", "loop")
"""Backends whose stacks run one model object (its train/eval mode, its dropout draws while they run):
threads of one process would share it, so their stacks train one after another (forked lanes do not share)."""


def _lane_thread() -> None:
    """Set up the calling thread to train as every lane does: one intra-op thread, so that every op
    runs on this thread, and subnormal floats flushed to zero (FTZ/DAZ, for this thread only).

    A well-trained classifier's softmax underflows to subnormal probabilities (below 1.2e-38), and
    every op of the backward pass that reads or writes them takes the CPU's slow path: a stack of
    the CNN benchmark stepped 11-17 % slower once its members fit the data. Flushed, such a value
    becomes 0 (a change of at most 1.2e-38); on the benchmark's 32 configurations every parameter,
    loss and metric after 500 steps was the same to the bit with and without it."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


def _flushes_subnormals() -> bool:
    """Does the calling thread flush subnormal floats to zero? (A float32 subnormal survives its
    conversion from a Python float unless it does.)"""
    return torch.tensor([1e-40]).item() == 0.0


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Inside, the calling thread flushes subnormal floats to zero as every lane does (:func:`_lane_thread`);
    restored after. :func:`inertia.fit` trains inside it, so that it computes what a lane computes."""
    flushing = _flushes_subnormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(flushing)


def _run_here(parts: Sequence[Part], trainer: Trainer) -> int:
    """One lane in this process, set up like every lane (and restored after): a lone stack of small
    products with more threads ran 10-100x slower on a loaded machine (threads spinning for cores)."""
    previous = torch.get_num_threads()
    with subnormals_flushed():
        _lane_thread()
        try:
            return sum(trainer.train(*part) for part in parts)
        finally:
            torch.set_num_threads(previous)


def _run_threads(parts: Sequence[Part], lanes: int, trainer: Trainer) -> int:
    from concurrent.futures import ThreadPoolExecutor

    def lane(part: Part) -> int:   # a pool thread of its own: its flush setting ends with it
        _lane_thread()
        return trainer.train(*part)

    previous = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=lanes) as pool:
            return sum(f.result() for f in [pool.submit(lane, part) for part in parts])
    finally:
        torch.set_num_threads(previous)


def _run_forked(parts: list[Part], lanes: int, trainer: Trainer) -> int:
    """Each stack trains in a forked child, ``lanes`` at a time; this process alone talks to the storage.

    A child sends progress, asks for pruning decisions and sends its records at the
    end; it writes its own checkpoints and dies with this process (PR_SET_PDEATHSIG),
    so a killed sweep leaves no trainer behind and resumes from the checkpoints.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    running: dict[Any, tuple[int, list[Any], str | None]] = {}
    told, failures, oom_kills_before = 0, [], oom_kills()
    try:
        while parts or running:
            while parts and len(running) < lanes:
                trials, members, path = parts.pop(0)
                mine, theirs = multiprocessing.Pipe()
                parent = os.getpid()
                pid = _fork_holding_stops()
                if pid == 0:  # the child: never returns
                    mine.close()
                    _lane_child(theirs, parent, members, path, trainer)
                theirs.close()
                running[mine] = (pid, trials, path)
            trainer.heartbeat()
            for conn in wait(list(running), timeout=trainer.tick):
                told += _answer(conn, running, trainer, failures, oom_kills_before)
    finally:
        for conn, (pid, _, _) in running.items():  # interrupted or failed: stop the rest
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
            conn.close()
    if failures:
        tracebacks = "\n".join(text for _, _, text in failures if text)
        raise LaneFailed(failures) from (RemoteTraceback(tracebacks) if tracebacks else None)
    return told


class RemoteTraceback(Exception):
    """A lane's own traceback, chained to :class:`LaneFailed` (shown with ``INERTIA_DEBUG=1``)."""


class LaneFailed(ChildProcessError):
    """Training processes ended without their results (the others finished theirs and told them);
    what the failed ones held is given back by the worker, or resumed from their checkpoints."""

    def __init__(self, failures: list[tuple[int, str, str]]):
        reasons = "; ".join(dict.fromkeys(reason for _, reason, _ in failures))
        count = f"{len(failures)} training process" + ("es" if len(failures) > 1 else "")
        super().__init__(f"{count} ended without results ({reasons}); what finished is saved: "
                         f"run the same command again to train the rest")


def oom_kills() -> int | None:
    """Processes of this process's memory cgroup the out-of-memory killer has ended so far (the kernel's
    ``oom_kill`` count: ``memory.events`` in cgroup v2, ``memory.oom_control`` in v1), or None where
    neither can be read. The kernel's log (dmesg) names the victim too but is seldom readable."""
    try:
        with open("/proc/self/cgroup") as f:
            groups = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return None
    for _, controllers, path in groups:
        if controllers == "":
            file = f"/sys/fs/cgroup{path.rstrip('/')}/memory.events"
        elif "memory" in controllers.split(","):
            file = f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control"
        else:
            continue
        try:
            with open(file) as f:
                counts = dict(line.split(None, 1) for line in f if " " in line)
            return int(counts["oom_kill"])
        except (OSError, KeyError, ValueError):
            continue
    return None


def _ended(status: int, oom_kills_before: int | None) -> str:
    """Why a child ended, from its wait status: its exit status, or the signal by name and, for SIGKILL,
    who sent it: the out-of-memory killer where :func:`oom_kills` rose since ``oom_kills_before``
    (taken before the lanes started), another process where it did not, either where it is unknown."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit status {code}"
    try:
        stop = signal.Signals(-code)
    except ValueError:
        return f"killed by signal {-code}"
    if stop != signal.SIGKILL:
        return f"killed by {stop.name} ({signal.strsignal(stop)})"
    now = oom_kills()
    if now is None or oom_kills_before is None:
        return ("killed by SIGKILL (the out-of-memory killer or another process; if memory ran out, "
                "try a smaller --max-batch)")
    if now > oom_kills_before:
        return "killed by the out-of-memory killer (SIGKILL); try a smaller --max-batch"
    return "killed by SIGKILL from another process (the out-of-memory killer's count did not change)"


STOPS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a command (Ctrl-C, ``kill``): the command line's handler raises KeyboardInterrupt."""


def _fork_holding_stops() -> int:
    """``os.fork()`` with :data:`STOPS` held until it returns; the child lets them go in :func:`_lane_child`.

    Python runs fork's hooks (logging's lock resets) inside ``os.fork``, and a KeyboardInterrupt
    raised there is printed as "Exception ignored" and dropped: a Ctrl-C landing in a fork was lost
    (the sweep ran on) and a lane printed its traceback. Held, the signal waits and is raised in the
    parent's loop just after the fork."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return pid


def _answer(conn: Any, running: dict[Any, tuple[int, list[Any], str | None]], trainer: Trainer,
            failures: list[tuple[int, str, str]], oom_kills_before: int | None) -> int:
    """Handle one message of a forked lane; how many trials it told (its last message: all of them).
    A lane that dies or fails is added to ``failures`` as (pid, reason, its traceback or "");
    ``oom_kills_before``: :func:`oom_kills` before the lanes started."""
    pid, trials, path = running[conn]
    try:
        message = conn.recv()
    except EOFError:
        message = ("died",)
    kind = message[0]
    if kind == "steps":
        trainer.progress(pid, message[1], len(trials))
    elif kind == "judge":
        conn.send(trainer.judge(trials)(*message[1:]))
    else:
        if kind == "done":
            trainer.tell(trials, message[1], path, pid)
        conn.close()
        _, status = os.waitpid(pid, 0)
        del running[conn]
        if kind == "done":
            return len(trials)
        if kind == "died":
            failures.append((pid, _ended(status, oom_kills_before), ""))
        else:  # "error": the lane's exception, its traceback's last line as the reason
            failures.append((pid, message[1].strip().splitlines()[-1], message[1]))
    return 0


def _lane_child(conn: Any, parent: int, members: Members, path: str | None, trainer: Trainer) -> None:
    """Body of a forked lane: train, talk to the parent over ``conn``, then exit (never returns)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle: it stops its lanes
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's Ctrl-C handler: a lane stopped dies
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)   # held across the fork
        _die_with_parent(parent)
        _lane_thread()
        _keep_freed_memory()
        last = [0.0]

        def progress(step: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.1:
                last[0] = now
                conn.send(("steps", step))

        def judge(step: int, means: dict[int, tuple[float, float]]) -> list[int]:
            conn.send(("judge", step, means))
            return conn.recv()

        conn.send(("done", trainer.train_members(members, path, judge, progress)))
        code = 0
    except BaseException:
        import traceback

        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        os._exit(code)  # no atexit handlers, no finalizers of the parent's objects (storage connections)


def _keep_freed_memory() -> None:
    """Have glibc keep freed memory in this process's heap rather than hand it back to the kernel.

    A step of a stack frees and allocates tens of MB of activations (the conv backend's, through
    autograd); glibc returned them to the kernel at every step and took every page back with a
    fault, thousands a step. A lane is a process of its own, so it holds no one else's memory.
    Elsewhere than glibc there is no ``mallopt``, and nothing changes.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep up to 1 GiB free at the heap's top
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MiB (glibc's most) from the heap
    except (OSError, AttributeError):
        pass


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` ends (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:   # PR_SET_PDEATHSIG = 1
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(1)
