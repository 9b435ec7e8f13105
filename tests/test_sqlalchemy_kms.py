"""KMS calls of the column types against a real moto server (calls counted with a
botocore event hook): KMS is called per key, never per row."""

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard
from piiguard.kms.aws import AwsKMS
from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn


def tc(n: int) -> str:
    base = str(100000000 + n)
    return base + tckn.calc_check_digits(base)


def models(guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard))
        address: Mapped[str] = mapped_column(EncryptedAddress(guard))

    return Base, Customer


@pytest.mark.slow
def test_insert_then_read_10000_rows_through_fresh_guards_costs_at_most_3_kms_calls(
        aws_kms, sqlite_engine):
    kms, client, counter = aws_kms
    counter.reset()
    writer = Guard(kms=AwsKMS(key_id=kms.master_key_id, client=client))
    Base, C = models(writer)
    Base.metadata.create_all(sqlite_engine)
    writer.bind(sqlite_engine)          # creates the KEK (1 call), the DEK and index key
    rows = [{"id": i, "national_id": tc(i), "phone": f"+90532{i:07d}",
             "address": f"Bağdat Cad. No:{i}, İstanbul"} for i in range(1, 10001)]
    with Session(sqlite_engine) as s:
        s.execute(insert(C), rows[:5000])           # ORM bulk insert
        s.add_all([C(**r) for r in rows[5000:]])    # ORM unit of work
        s.commit()
    writer.close()
    reader = Guard(kms=AwsKMS(key_id=kms.master_key_id, client=client))
    _, C2 = models(reader)
    reader.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        got = s.scalars(select(C2).order_by(C2.id)).all()
        assert len(got) == 10000
        assert (got[41].national_id, got[41].phone) == (tc(42), "+905320000042")
        assert got[9999].address == "Bağdat Cad. No:10000, İstanbul"
    assert counter.total <= 2, dict(counter.calls)
    assert counter.calls["GenerateDataKey"] == 1 and counter.calls["Decrypt"] == 1
    # a blind-index lookup through the reader unwraps the index key locally (KEK cached)
    with Session(sqlite_engine) as s:
        assert s.scalar(select(func.count()).where(C2.national_id == tc(7))) == 1
        assert s.scalar(select(func.count()).where(C2.national_id == tc(8))) == 1
    assert counter.calls["Decrypt"] == 1 and counter.total == 2
