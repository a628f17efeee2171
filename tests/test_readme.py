"""The README's Python example runs as written (documentation that cannot rot silently)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_and_learns():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    loss = float(scope["loss"].detach())
    assert loss < 2.0, f"the README example should learn MNIST-1D (chance is ln 10 = 2.30), got loss {loss}"


def test_ci_runs_the_readmes_test_command():
    """.ci/run calls the README's test command word for word (after starting the services)."""
    readme = README.read_text()
    command = re.search(r"The tests:\s*```bash\n(.*?)\n```", readme, re.S).group(1).strip()
    assert "pytest" in command
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert ci[-1].strip() == command
