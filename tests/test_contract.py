"""The published OpenAPI document is a promise, checked by a tool we did not write.

Schemathesis generates requests from ``/openapi.json`` (bounded and derandomized, so CI
sees the same cases every run) and sends them to a live server. Every answer must hold:
no 5xx; a request the schema calls valid is not refused (``positive_data_acceptance``: no
400/413/422 for it); no status code the document does not list; every documented response
matches its schema and content type; a method the document does not list is a 405 with
an ``Allow`` header (RFC 9110). Realtime is a WebSocket (tested in ``test_realtime.py``),
but its plain-HTTP answer (426) is checked here too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from engine.normalize.common import parse_time
from engine.sources import protocol_for
from server.openapi import SPEC
from server.schemas import URL_PATTERN

schema = schemathesis.openapi.from_dict(SPEC).exclude(path_regex=r"^/(docs|api/realtime$)")
# Realtime speaks WebSocket; over plain HTTP every request, valid or not, gets its 426.
realtime = schemathesis.openapi.from_dict(SPEC).include(path_regex=r"^/api/realtime$")

CHECKS = [
    not_a_server_error,
    positive_data_acceptance,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    unsupported_method,
]


@schema.parametrize()
@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.e2e
def test_api_keeps_its_contract(case: schemathesis.Case, live_url: str) -> None:
    case.call_and_validate(base_url=live_url, checks=CHECKS, timeout=30)


@realtime.parametrize()
@settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.e2e
def test_realtime_over_plain_http_is_a_documented_426(
    case: schemathesis.Case, live_url: str
) -> None:
    checks = [c for c in CHECKS if c is not positive_data_acceptance]
    case.call_and_validate(base_url=live_url, checks=checks, timeout=30)


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.from_regex(URL_PATTERN))
def test_every_url_the_schema_accepts_splits_into_a_host_and_port(url: str) -> None:
    # The published pattern is the validation: whatever it admits, the connector code
    # must be able to take apart (urllib raises on bad ports and bracketed hosts).
    parts = urlsplit(url)
    assert parts.hostname
    assert parts.port is None or 0 <= parts.port <= 65535
    assert protocol_for(url) is not None


OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.datetimes(timezones=OFFSETS), st.sampled_from(["T", "t", " "]))
def test_every_rfc3339_time_parses(moment: datetime, separator: str) -> None:
    text = moment.isoformat(sep=separator)  # offsets in whole minutes, as RFC 3339 has them
    parsed = parse_time(text)
    assert parsed is not None
    clamped = moment.astimezone(UTC) if 1 < moment.year < 9999 else parsed
    assert parsed == clamped
