"""The examples of docs/columns.md's sections on addresses as written and on typed
columns run as written (issue 16)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "columns.md"


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.index("\n#", start + len(title))
    return text[start:end]


def _run(section: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks
    parser = doctest.DocTestParser()
    globs: dict = {}                 # one namespace for the section, as a reader has
    for i, block in enumerate(blocks):
        test = parser.get_doctest(block, globs, f"columns.md[{i}]", str(DOC), 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS
                                       | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, clear_globs=False)
        assert runner.failures == 0, block
        globs = test.globs           # (DocTest copies the namespace it is given)


def test_address_section_examples_run():
    _run(_section("### Addresses: the user's text"))


def test_typed_section_table_names_the_real_columns():
    import piiguard.sqlalchemy as sa
    section = _section("## Typed columns")
    for name in ("EncryptedDate", "EncryptedDateTime", "EncryptedInteger",
                 "EncryptedDecimal", "EncryptedJSON", "EncryptedBytes"):
        assert f"`{name}`" in section and name in sa.__all__
    # "EncryptedJSON ... no (ConfigurationError)": the one column that cannot be searched
    from piiguard import Guard, LocalKMS, errors
    guard = Guard(kms=LocalKMS.generate())
    import pytest
    with pytest.raises(errors.ConfigurationError):
        sa.EncryptedJSON(guard, searchable=True)
    for name in ("EncryptedDate", "EncryptedDateTime", "EncryptedInteger",
                 "EncryptedDecimal", "EncryptedBytes"):
        getattr(sa, name)(guard, searchable=True)
