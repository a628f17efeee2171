"""Each model the README names, swept from the command line at the README's sizes, then its printed
``inertia train`` command run as printed: do the two give the same numbers? Writes docs/reproduce-check.json.

    .venv/bin/python scripts/reproduce_check.py            # every case (about 10 minutes on 2 cores)
    .venv/bin/python scripts/reproduce_check.py lstm gru   # some
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "reproduce-check.json"
SEQUENCES = ["--data", "mnist1d_sequences.npz", "--lr", "1e-2:1:4", "--steps", "300"]
CASES = {
    "gru": [*SEQUENCES, "--model", "examples.sequences:GRUClassifier", "--momentum", "0,0.5,0.9,0.99"],
    "lstm": [*SEQUENCES, "--model", "examples.sequences:LSTMClassifier", "--momentum", "0,0.9"],
    "transformer": ["--data", "digits_tokens.npz", "--model", "examples.sequences:TokenTransformer",
                    "--lr", "1e-3:1e-1:4", "--momentum", "0,0.9", "--steps", "200"],
    "diabetes-mse": ["--data", "diabetes.npz", "--model", "mlp", "--loss", "mse", "--standardize",
                     "--lr", "1e-6:1e-3:4", "--momentum", "0,0.9", "--steps", "300"],
    "dropout": ["--data", "mnist1d", "--model", "examples.dropout:DropoutMLP", "--lr", "1e-2:1:4",
                "--momentum", "0,0.9", "--steps", "300"],
    "cosine": ["--data", "mnist1d", "--model", "mlp", "--schedule", "lr=cosine", "--lr", "1e-2:1:4",
               "--momentum", "0,0.9", "--steps", "300"],
}
COMPARED = ("val_loss_mean", "test_loss_mean")


def inertia(args: list[str], folder: Path) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "inertia.cli", *args], cwd=folder, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout


def write_data(folder: Path) -> None:
    """The sequence files of examples/sequences.py, and scikit-learn's diabetes data (integer-valued targets)."""
    sys.path.insert(0, str(ROOT))
    from examples.sequences import write_data as write_sequences
    from sklearn.datasets import load_diabetes

    write_sequences(str(folder))
    x, y = load_diabetes(return_X_y=True)
    np.savez(folder / "diabetes.npz", x=x.astype(np.float32), y=y.astype(np.float32))


def check(name: str, folder: Path) -> dict:
    started = time.perf_counter()
    printed = inertia(["sweep", *CASES[name], "--out", f"runs/{name}", "--quiet"], folder)
    swept = time.perf_counter() - started
    command = shlex.split(printed.split("reproduce it with:")[1].strip().splitlines()[0])
    best = json.loads((folder / f"runs/{name}/results.json").read_text())["best"]
    started = time.perf_counter()
    inertia([*command[1:], "--json", f"runs/{name}/train.json", "--quiet"], folder)
    ours = json.loads((folder / f"runs/{name}/train.json").read_text())
    return {"sweep": shlex.join(["inertia", "sweep", *CASES[name]]), "reproduce": shlex.join(command),
            "sweep_seconds": round(swept, 1), "reproduce_seconds": round(time.perf_counter() - started, 1),
            **{f"sweep_{k}": best[k] for k in COMPARED}, **{f"reproduced_{k}": ours[k] for k in COMPARED},
            "same": all(ours[k] == best[k] for k in COMPARED)}


def main() -> None:
    names = sys.argv[1:] or list(CASES)
    unknown = set(names) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(folder)
        print(f"{'case':14} {'sweep s':>8} {'train s':>8} {'val loss (sweep)':>18} {'(reproduced)':>18}  same")
        for name in names:
            rows[name] = row = check(name, folder)
            print(f"{name:14} {row['sweep_seconds']:8.1f} {row['reproduce_seconds']:8.1f} "
                  f"{row['sweep_val_loss_mean']:18.10g} {row['reproduced_val_loss_mean']:18.10g}  {row['same']}",
                  flush=True)
    RECORD.write_text(json.dumps({"cpu_count": os.cpu_count(), "cases": rows}, indent=1) + "\n")
    print(f"wrote {RECORD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
