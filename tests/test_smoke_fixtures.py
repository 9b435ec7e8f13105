"""The shared fixtures themselves work: servers reachable, moto server answers."""

from sqlalchemy import text


def test_any_engine_runs_sql(any_engine):
    with any_engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_moto_server_counts_calls(aws_kms):
    kms, client, counter = aws_kms
    pair = kms.generate_data_key({"piiguard:scope": "t"})
    assert kms.decrypt_data_key(pair.wrapped, pair.master_key_id,
                                {"piiguard:scope": "t"}) == pair.plaintext
    assert counter.calls["GenerateDataKey"] == 1 and counter.calls["Decrypt"] == 1
