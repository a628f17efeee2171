"""The README quotes the main job's numbers from docs/main-job.json, the record of its last documented run
(written by scripts/document_main_job.py): a test fails when the two disagree."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = " ".join((ROOT / "README.md").read_text().split())
RUN = json.loads((ROOT / "docs" / "main-job.json").read_text())


def short(value: float) -> str:
    return f"{value:.2g}"


def test_the_record_is_of_the_readmes_main_job_command():
    assert RUN["command"] in README


def test_the_recommendation_and_its_reproduction_are_quoted_as_recorded():
    best, runner_up, again = RUN["best"], RUN["runner_up"], RUN["reproduce"]
    quoted = [
        f"recommends lr {short(best['lr'])}, μ {short(best['momentum'])} at step {best['best_step']}, "
        f"{100 * best['test_accuracy_mean']:.1f} ± {100 * best['test_accuracy_std']:.1f} % test accuracy",
        f"its reproduce command gives {100 * again['test_accuracy_mean']:.1f} ± "
        f"{100 * again['test_accuracy_std']:.1f} %",
        f"lists lr {short(runner_up['lr'])}, μ {short(runner_up['momentum'])} "
        f"({100 * runner_up['test_accuracy_mean']:.1f} %) next",
        f"{RUN['diverged']} of its {RUN['configurations']} configurations diverged",
        f"took {RUN['wall_seconds']:.0f} s",
        RUN["machine"]["cpu"],
    ]
    missing = [text for text in quoted if text not in README]
    assert not missing, f"the README should quote docs/main-job.json: {missing}"


def test_the_range_test_is_quoted_as_recorded():
    found = RUN["finder"]
    quoted = [found["command"], f"λ_max = {short(found['sharpness'])}",
              f"The range test took {found['wall_seconds']:.0f} s",
              *(f"lr {short(v['lr_low'])}–{short(v['lr_high'])} for μ {mu}" for mu, v in found["momenta"].items())]
    missing = [text for text in quoted if text not in README]
    assert not missing, f"the README should quote docs/main-job.json's range test: {missing}"
    assert "docs/images/finder-mnist1d.png" in README and "docs/images/sweep-heatmap.png" in README
    assert " --edge " in RUN["command"], "the main job draws the stability edge on its heatmap"


def test_the_reproduce_check_the_readme_quotes_gave_the_sweeps_numbers_in_every_case():
    """docs/reproduce-check.json is written by scripts/reproduce_check.py (each README model swept, then its
    printed command run): the README says all six gave the same numbers, and quotes the LSTM's."""
    check = json.loads((ROOT / "docs" / "reproduce-check.json").read_text())["cases"]
    assert set(check) == {"gru", "lstm", "transformer", "diabetes-mse", "dropout", "cosine"}
    for name, case in check.items():
        for key in ("val_loss_mean", "test_loss_mean"):
            assert case[f"reproduced_{key}"] == case[f"sweep_{key}"], (name, key)
    assert f"validation loss {check['lstm']['sweep_val_loss_mean']:.6f} in both" in README


def test_the_main_jobs_reproduce_command_gave_its_numbers_to_the_bit():
    best, again = RUN["best"], RUN["reproduce"]
    assert again["test_accuracy_mean"] == best["test_accuracy_mean"]
    assert again["test_accuracy_std"] == best["test_accuracy_std"]
    assert "the same numbers to the bit" in README
