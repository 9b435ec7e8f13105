"""The database markers are applied from the fixtures a test uses (tests/conftest.py)."""

from __future__ import annotations

from types import SimpleNamespace

import conftest


class _Item:
    def __init__(self, fixturenames, params=None):
        self.fixturenames = fixturenames
        self.callspec = SimpleNamespace(params=params) if params is not None else None
        self.markers: list[str] = []

    def add_marker(self, mark):
        self.markers.append(mark.name)


def test_markers_follow_the_fixtures():
    items = [_Item(["pg_engine", "local_kms"]), _Item(["mariadb_server_engine"]),
             _Item(["sqlite_engine"]), _Item(["any_engine"], {"any_engine": "mariadb"}),
             _Item(["any_engine"], {"any_engine": "sqlite"}),
             _Item(["pg_engine", "mariadb_engine"])]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.markers for i in items] == [["postgresql"], ["mariadb"], [], ["mariadb"], [],
                                          ["mariadb", "postgresql"]]


def test_a_server_test_carries_its_marker(request, pytestconfig):
    # This very test is collected like any other: it uses no server, so no marker.
    assert not [m for m in request.node.iter_markers() if m.name in ("postgresql",
                                                                     "mariadb")]
