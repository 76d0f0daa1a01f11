"""The README's first Python example runs as written, from the clone."""
import os
import re
import subprocess
import sys

from conftest import REPO


def test_the_readme_example_runs_as_written():
    with open(os.path.join(REPO, "README.md")) as handle:
        readme = handle.read()
    section = readme[readme.index("## Using it"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", example], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
