"""The README's "Your own loop" example runs as written and gives an ordinary trained module."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_own_loop_example_runs():
    section = README.read_text().split("## Your own loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    best, models = scope["best"], scope["models"]
    assert isinstance(best, torch.nn.Sequential)
    assert scope["out"].shape == (4, len(scope["data"].y_train), scope["data"].classes)
    i = int(scope["loss"].view(4, -1).mean(1).argmin())
    for key, value in best.state_dict().items():
        assert torch.equal(value, models.state_dict()[key][i])
