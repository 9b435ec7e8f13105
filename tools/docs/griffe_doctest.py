"""A griffe extension for the API reference: docstrings show their examples as code.

piiguard's docstrings are reStructuredText-ish prose with doctest examples (``>>>``
lines, checked by pytest) and ``::`` literal blocks; rendered as Markdown, a doctest
would become a paragraph (and a ``['a', 'b']`` output a broken link). This fences every
doctest run and every literal block as code.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence(text: str) -> str:
    """``text`` with doctest runs and ``::`` literal blocks fenced as code
    (``tests/test_docs_site.py`` shows both)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += ["```pycon", *block, "```"]
            continue
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            out.append(line.rstrip()[:-1])        # "Use it::" -> "Use it:"
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            if block:
                indent = min(len(b) - len(b.lstrip()) for b in block if b.strip())
                out += ["", "```python", *(b[indent:] for b in block), "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the examples of every docstring piiguard's reference renders."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence(obj.docstring.value)
