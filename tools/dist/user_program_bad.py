"""Negative control: typed wrongly against piiguard's API, `mypy --strict` must fail here.
If it passes, piiguard's types are not reaching mypy (the package would look untyped)."""
from __future__ import annotations

from piiguard import Guard, LocalKMS
from piiguard.validators import tckn

guard: Guard = Guard(kms=LocalKMS.from_file(".piiguard/master.key", create=True))
number: int = tckn.validate("10000000146")
flag: str = tckn.is_valid("10000000146")
