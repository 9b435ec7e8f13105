"""The documentation site (``make docs``: mkdocs-material + mkdocstrings, a strict build
that ``make test`` runs): every page in docs/ is in the navigation, every public name of
the package's facade is in the API reference, the build needs no network, and the
docstrings' examples render as code."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import yaml

import piiguard

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def nav_pages(nav) -> list[str]:
    out: list[str] = []
    for item in nav:
        for value in (item.values() if isinstance(item, dict) else [item]):
            out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_docs_page_is_in_the_navigation():
    pages = set(nav_pages(CONFIG["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == pages
    for name in ("errors.md", "fastapi.md", "sqlmodel.md", "architecture.md", "kms.md",
                 "alembic.md"):
        assert name in pages


def test_the_reference_covers_the_facade():
    reference = "".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    for name in piiguard.__all__:
        if name.startswith("__") or name == "errors":
            continue
        assert re.search(rf"::: piiguard\.[\w.]*\b{name}\b", reference) or \
            f"`{name}`" in reference, name
    assert "::: piiguard.errors" in reference


def test_the_build_is_strict_and_offline():
    assert CONFIG["strict"] is True
    assert CONFIG["theme"]["font"] is False        # no web fonts fetched
    text = (ROOT / "mkdocs.yml").read_text()
    assert "import:" not in text                   # no inventories downloaded
    make = (ROOT / "Makefile").read_text()
    assert "mkdocs build --strict" in make
    test_target = make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "$(MAKE) docs" in test_target


def test_the_doc_packages_are_in_the_dev_extra():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "piiguard[test,bench,docs]" in extras["dev"]
    assert {d.split(">=")[0] for d in extras["docs"]} == {
        "mkdocs", "mkdocs-material", "mkdocstrings[python]"}
    assert all(">=" in d for d in extras["docs"])


def test_doctests_render_as_code():
    spec = importlib.util.spec_from_file_location(
        "griffe_doctest", ROOT / "tools" / "docs" / "griffe_doctest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.fence(inspect.cleandoc(piiguard.errors.chained.__doc__))
    assert "```pycon\n>>> try:" in out
    assert "['InvalidFormatError', 'KeyError']\n```" in out
    literal = mod.fence("Use it::\n\n    guard.bind(engine)\n\nThen.")
    assert literal == "Use it:\n\n```python\nguard.bind(engine)\n```\n\nThen."
