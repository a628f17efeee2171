"""Run the README's main job as written, then its printed reproduce command, and record what the
README quotes in docs/main-job.json (tests/test_readme.py fails when the README and that file disagree).

    .venv/bin/python scripts/document_main_job.py      # from the repository root, after scripts/setup.sh
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main_job_command() -> list[str]:
    """The README's main-job command, without its set-up prefix."""
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"^bash scripts/setup\.sh && (\.venv/bin/inertia sweep .*)$", readme, re.M).group(1)
    return shlex.split(line)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_main_job(out: Path) -> tuple[float, Path]:
    command = [str(BIN / "inertia"), *main_job_command()[1:]]
    command[command.index("--out") + 1] = str(out)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - started, out / "results.json"


def load(results_path: Path):
    from inertia.sweeps.results import SweepResults

    payload = json.loads(results_path.read_text())
    return SweepResults(payload["records"], payload["swept"], payload["metric"], payload["meta"])


def reproduce(results, scratch: Path) -> dict:
    from inertia.commands.reproduce import train_command

    command = shlex.split(train_command(results))
    command[0] = str(BIN / "inertia")
    subprocess.run([*command, "--json", str(scratch / "train.json")], check=True, cwd=ROOT)
    return {"command": shlex.join(["inertia", *command[1:]]), **json.loads((scratch / "train.json").read_text())}


def main() -> None:
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        wall, results_path = run_main_job(scratch / "sweep")
        results = load(results_path)
        again = reproduce(results, scratch)
    best, runner_up = results.ranked()[:2]
    statuses = [r["status"] for r in results.records()]
    summary = {
        "command": shlex.join(main_job_command()),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "wall_seconds": round(wall, 1),
        "configurations": len(statuses),
        "diverged": statuses.count("diverged"),
        "best": {k: best[k] for k in ("lr", "momentum", "best_step", "val_accuracy_mean", "test_accuracy_mean",
                                      "test_accuracy_std")},
        "runner_up": {k: runner_up[k] for k in ("lr", "momentum", "test_accuracy_mean")},
        "reproduce": {"command": again["command"],
                      **{k: v for k, v in again.items() if k.startswith("test_accuracy")}},
    }
    (ROOT / "docs" / "main-job.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
