"""The README's quickstart, as written, run twice in a fresh directory (each run a fresh
interpreter, as a user would): both runs succeed and print what its comments say; the
README's install section names the extras pyproject.toml defines."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def quickstart() -> str:
    section = README.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_quickstart_runs_any_number_of_times(tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart(), encoding="utf-8")
    outputs = []
    for _ in range(3):
        res = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        outputs.append(res.stdout.splitlines())
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0] == ["10000000146 +905321234567", "1********46", "10000000146",
                          "[REDACTED]"]


def test_the_install_section_names_real_extras():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    section = README.split("## Install", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"piiguard\[(\w+)\]", section)
    assert named and all(e in extras for e in named)
    assert any("psycopg" in d for d in extras["postgresql"])
    assert any("pymysql" in d.lower() for d in extras["mysql"])
