"""Build piiguard's sdist and wheel, check them, and smoke-test the wheel in a fresh venv.

What `make dist` runs (and `.ci/run` after the tests). Each step fails the run:

1. `python -m build` into a temporary folder; any setuptools warning fails the build.
2. `twine check --strict` on both files.
3. Contents: the wheel holds `piiguard/` with `py.typed` and the LICENSE, and no tests or
   benchmarks; the sdist holds the docs, the examples, LICENSE, CHANGELOG.md, SECURITY.md
   and no tests or benchmarks.
4. A fresh virtual environment with only the wheel installed (and mypy): the public
   contract imports, `piiguard demo` runs in an empty folder, `mypy --strict` passes on
   `tools/dist/user_program.py` and fails on `tools/dist/user_program_bad.py` (the negative
   control: if it passed, piiguard's types would not be reaching mypy).

Usage: ``python tools/dist/check.py [--keep DIR]``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

CONTRACT = """
import piiguard
from piiguard import Guard, LocalKMS, AwsKMS, MaskingPolicy, acting_as, errors
from piiguard.sqlalchemy import (EncryptedString, EncryptedNationalId, EncryptedTaxId,
                                 EncryptedPhone, EncryptedAddress, EncryptedEmail)
from piiguard.pydantic import NationalId, TaxId, Phone, Address, Email
from piiguard.validators import tckn, vkn, phone
assert tckn.validate("10000000146") == "10000000146"
assert phone.validate("0532 123 45 67") == "+905321234567"
print("contract ok", piiguard.__version__)
"""

#: Setuptools and build warnings look like these; any of them fails the build.
WARNING = re.compile(r"(?i)(warning|deprecat)")


def run(cmd: list[str], *, cwd: Path | None = None, expect_ok: bool = True) -> str:
    """Run a command, echo it, return its combined output; fail the check on a bad exit."""
    print("+", " ".join(cmd), flush=True)
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) makes setuptools print
    # "byte-compiling is disabled" warnings that say nothing about the package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=env)
    if expect_ok and proc.returncode != 0:
        print(proc.stdout)
        raise SystemExit(f"FAILED ({proc.returncode}): {' '.join(cmd)}")
    if not expect_ok and proc.returncode == 0:
        print(proc.stdout)
        raise SystemExit(f"expected a failure, got success: {' '.join(cmd)}")
    return proc.stdout


def build(out: Path) -> tuple[Path, Path]:
    output = run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    warnings = [line for line in output.splitlines() if WARNING.search(line)]
    if warnings:
        print("\n".join(warnings))
        raise SystemExit("FAILED: the build printed warnings (above)")
    wheels = list(out.glob("piiguard-*.whl"))
    sdists = list(out.glob("piiguard-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise SystemExit(f"FAILED: expected one wheel and one sdist in {out}")
    return wheels[0], sdists[0]


def check_contents(wheel: Path, sdist: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    problems = []
    for need in ("piiguard/__init__.py", "piiguard/py.typed", "piiguard/cli.py"):
        if need not in names:
            problems.append(f"wheel lacks {need}")
    if not any(n.endswith("licenses/LICENSE") for n in names):
        problems.append("wheel lacks the LICENSE")
    for name in names:
        top = name.split("/", 1)[0]
        if top in ("tests", "benchmarks", "tools", "examples", "docs"):
            problems.append(f"wheel holds {name}")
    with tarfile.open(sdist) as tar:
        members = [m.split("/", 1)[1] for m in tar.getnames() if "/" in m]
    for need in ("LICENSE", "README.md", "CHANGELOG.md", "SECURITY.md", "pyproject.toml",
                 "piiguard/py.typed", "docs/operations.md", "docs/format.md",
                 "examples/fastapi_app/app.py"):
        if need not in members:
            problems.append(f"sdist lacks {need}")
    for name in members:
        if name.split("/", 1)[0] in ("tests", "benchmarks"):
            problems.append(f"sdist holds {name}")
    if problems:
        raise SystemExit("FAILED contents:\n  " + "\n  ".join(problems))
    print(f"contents ok: wheel {len(names)} files, sdist {len(members)} files")


def smoke(wheel: Path, work: Path) -> None:
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--quiet", str(wheel), "mypy>=1.10"])
    empty = work / "empty"
    empty.mkdir()
    print(run([str(py), "-c", CONTRACT], cwd=empty).strip())
    demo = run([str(venv / "bin" / "piiguard"), "demo"], cwd=empty)
    print(f"demo ok ({len(demo.splitlines())} lines of output)")
    user = work / "user"
    user.mkdir()
    for name in ("user_program.py", "user_program_bad.py"):
        shutil.copy(HERE / name, user / name)
    mypy = str(venv / "bin" / "mypy")
    print(run([mypy, "--strict", "--no-incremental", "user_program.py"], cwd=user).strip())
    bad = run([mypy, "--strict", "--no-incremental", "user_program_bad.py"], cwd=user,
              expect_ok=False)
    if "user_program_bad.py:" not in bad or "piiguard/" in bad:
        print(bad)
        raise SystemExit("FAILED: the negative control did not fail where it should")
    print("mypy --strict: user program clean, negative control caught "
          f"{bad.count('error:')} errors")
    print(run([str(py), "user_program.py"], cwd=user).strip().splitlines()[-2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the build and venv in this folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="piiguard-dist-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        wheel, sdist = build(work / "dist")
        run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)])
        check_contents(wheel, sdist)
        smoke(wheel, work)
        print(f"make dist: ok ({wheel.name}, {sdist.name})")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
