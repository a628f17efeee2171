"""Run the README's main job as written, then its printed reproduce command, and its range test
(``inertia find``), and record what the README quotes in docs/main-job.json and the pictures it shows
in docs/images (tests/test_readme_numbers.py fails when the README and that file disagree).

    .venv/bin/python scripts/document_main_job.py            # from the repository root, after scripts/setup.sh
    .venv/bin/python scripts/document_main_job.py --finder   # the range test alone (its record and picture)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
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
RECORD = ROOT / "docs" / "main-job.json"
HEATMAP = ROOT / "docs" / "images" / "sweep-heatmap.png"
FINDER_PLOT = ROOT / "docs" / "images" / "finder-mnist1d.png"


def main_job_command() -> list[str]:
    """The README's main-job command, without its set-up prefix."""
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"^bash scripts/setup\.sh && (\.venv/bin/inertia sweep .*)$", readme, re.M).group(1)
    return shlex.split(line)


def finder_command() -> list[str]:
    """The README's range-test command (the line of its own that starts ``.venv/bin/inertia find``)."""
    readme = (ROOT / "README.md").read_text()
    return shlex.split(re.search(r"^(\.venv/bin/inertia find .*)$", readme, re.M).group(1))


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
    return SweepResults(payload["records"], payload["swept"], payload["metric"], payload["meta"], payload["edge"])


def reproduce(results, scratch: Path) -> dict:
    from inertia.commands.reproduce import train_command

    command = shlex.split(train_command(results))
    command[0] = str(BIN / "inertia")
    subprocess.run([*command, "--json", str(scratch / "train.json")], check=True, cwd=ROOT)
    return {"command": shlex.join(["inertia", *command[1:]]), **json.loads((scratch / "train.json").read_text())}


def run_finder(scratch: Path) -> dict:
    """The README's range test as written, its picture copied to docs/images; what it found and its time."""
    command = [str(BIN / "inertia"), *finder_command()[1:], "--plot", str(scratch / "finder.png"),
               "--json", str(scratch / "finder.json")]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    shutil.copyfile(scratch / "finder.png", FINDER_PLOT)
    found = json.loads((scratch / "finder.json").read_text())
    return {"command": shlex.join(finder_command()), "machine": machine(), "wall_seconds": round(wall, 1),
            "sharpness": found["sharpness"], "stable_lr": found["stable_lr"],
            "momenta": {mu: {k: v[k] for k in ("lr_low", "lr_high", "diverged_at")}
                        for mu, v in found["momenta"].items()}}


def machine() -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finder", action="store_true",
                        help="run the range test alone and update its part of the record (the main job's stays)")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if parser.parse_args().finder:
            summary = {**json.loads(RECORD.read_text()), "finder": run_finder(scratch)}
        else:
            summary = document_main_job(scratch)
    RECORD.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def document_main_job(scratch: Path) -> dict:
    """The main job, its reproduce command and the range test, each run as the README writes it."""
    wall, results_path = run_main_job(scratch / "sweep")
    shutil.copyfile(results_path.parent / "heatmap.png", HEATMAP)
    results = load(results_path)
    again = reproduce(results, scratch)
    finder = run_finder(scratch)
    best, runner_up = results.ranked()[:2]
    statuses = [r["status"] for r in results.records()]
    return {
        "command": shlex.join(main_job_command()),
        "machine": machine(),
        "wall_seconds": round(wall, 1),
        "configurations": len(statuses),
        "diverged": statuses.count("diverged"),
        "sharpness": results.edge and results.edge["sharpness"],
        "best": {k: best[k] for k in ("lr", "momentum", "best_step", "val_accuracy_mean", "test_accuracy_mean",
                                      "test_accuracy_std")},
        "runner_up": {k: runner_up[k] for k in ("lr", "momentum", "test_accuracy_mean")},
        "reproduce": {"command": again["command"],
                      **{k: v for k, v in again.items() if k.startswith("test_accuracy")}},
        "finder": finder,
    }


if __name__ == "__main__":
    main()
