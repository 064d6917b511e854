"""DDL of the per-session staging table that record batches are COPYed into.

Created once per pooled connection; ``ON COMMIT DELETE ROWS`` empties it after each batch.
"""

STAGING_DDL = b"""
CREATE TEMP TABLE IF NOT EXISTS sluice_staging_v4 (
    ord           integer NOT NULL,
    connector_id  text,
    exchange      text NOT NULL,
    instrument    text,
    price         text,
    size          text,
    side          text,
    message_type  text NOT NULL,
    "timestamp"   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    data          jsonb NOT NULL,
    dedup_key     text NOT NULL,
    bid_price     text,
    bid_size      text,
    ask_price     text,
    ask_size      text,
    source_id     text,
    session_id    text,
    batch_id      bigint,
    status_code   integer,
    response_time_ms double precision,
    message_number bigint,
    format        text
) ON COMMIT DELETE ROWS
"""
