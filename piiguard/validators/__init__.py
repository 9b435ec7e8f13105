"""Validators for Turkish PII: pure functions in the style of python-stdnum.

Each module has ``validate(value) -> str`` (the canonical form, or a
:class:`piiguard.errors.InvalidInputError` that names the rule and never the value) and
``is_valid(value) -> bool`` (never raises). Numbers also have ``compact`` and
``calc_check_digit(s)``.

- :mod:`~piiguard.validators.tckn` — T.C. Kimlik No / YKN (11 digits, two check digits)
- :mod:`~piiguard.validators.vkn` — Vergi Kimlik Numarası (10 digits, one check digit)
- :mod:`~piiguard.validators.phone` — phone numbers to E.164 (``phonenumbers``)
- :mod:`~piiguard.validators.address` — Turkish postal addresses (81 provinces)
- :mod:`~piiguard.validators.email` — e-mail addresses (``email-validator``)
- :mod:`~piiguard.validators.name` — personal names (kept as written; never empty)

Empty input (or whitespace only) fails the rule ``empty`` in every one of them.

>>> from piiguard.validators import tckn, vkn, phone
>>> tckn.validate('10000000146'), vkn.validate('1234567890'), phone.validate('0532 123 45 67')
('10000000146', '1234567890', '+905321234567')
"""

from piiguard.validators import address, email, name, phone, tckn, vkn

__all__ = ["address", "email", "name", "phone", "tckn", "vkn"]
