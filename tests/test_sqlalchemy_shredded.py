"""Values under a destroyed (crypto-shredded) key: NULL by default, an error by option."""

import pytest
from sqlalchemy import Integer, select
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from piiguard import MaskingPolicy, acting_as, errors
from piiguard.sqlalchemy import EncryptedPhone


def _models(guard, on_destroyed):
    class Base(DeclarativeBase):
        pass

    class Subject(Base):
        __tablename__ = "subjects"
        id = mapped_column(Integer, primary_key=True)
        tenant_id = mapped_column(Integer, nullable=False)
        phone = mapped_column(EncryptedPhone(guard, key_scope="tenant_id",
                                             on_destroyed=on_destroyed))
    return Base, Subject


@pytest.mark.parametrize("with_policy", [False, True])
def test_shredded_values_read_as_null_by_option(guard, sqlite_engine, with_policy):
    Base, Subject = _models(guard, "null")
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([Subject(id=1, tenant_id=7, phone="05321234567"),
                   Subject(id=2, tenant_id=8, phone="05321234568")])
        s.commit()
    [key] = [k for k in guard.keys.keys(kind="dek") if k.scope == "subjects:7"]
    guard.keys.destroy(key.id)
    if with_policy:
        guard.policy = MaskingPolicy.from_dict({"default": "reveal"})
    with Session(sqlite_engine) as s, acting_as("admin"):
        phones = {r.id: r.phone for r in s.scalars(select(Subject).order_by(Subject.id))}
        assert phones == {1: None, 2: "+905321234568"}
        assert s.scalars(select(Subject.phone).where(Subject.id == 2)).one() == \
            "+905321234568"


def test_shredded_values_raise_when_strict(guard, sqlite_engine):
    Base, Subject = _models(guard, "raise")
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add(Subject(id=1, tenant_id=7, phone="05321234567"))
        s.commit()
    [key] = [k for k in guard.keys.keys(kind="dek") if k.scope == "subjects:7"]
    guard.keys.destroy(key.id)
    with Session(sqlite_engine) as s:
        with pytest.raises(errors.KeyDestroyedError, match=r"subjects\.phone"):
            s.scalars(select(Subject.phone)).all()


def test_on_destroyed_is_checked_when_built(guard):
    with pytest.raises(errors.ConfigurationError, match="on_destroyed"):
        EncryptedPhone(guard, on_destroyed="ignore")
