"""The README's Python example runs as written (its /tmp paths moved to a test directory)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from conftest import PATIENCE

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def test_readme_python_example(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, f"no python example in {README}"
    code = blocks[0].replace('"/tmp/', f'"{tmp_path}/')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "b'resize photo.png'\n1\n"
