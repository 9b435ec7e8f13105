"""An asyncpg-only install: ``bind`` needs a sync driver for the key table; without it
the error is a ConfigurationError naming the package (and extra) to install, not a bare
ModuleNotFoundError."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from piiguard import Guard, LocalKMS
from piiguard.errors import ConfigurationError


def test_a_missing_sync_driver_names_what_to_install(monkeypatch):
    url, module, hint = ("postgresql+asyncpg://u@127.0.0.1/db", "psycopg",
                         "piiguard[postgresql]")
    monkeypatch.setitem(sys.modules, module, None)   # as if never installed
    engine = create_async_engine(url)
    with pytest.raises(ConfigurationError) as err:
        Guard(kms=LocalKMS.generate()).bind(engine)
    msg = str(err.value)
    assert hint in msg and "key_engine=" in msg and module in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__
