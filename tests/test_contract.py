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

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from server.openapi import SPEC

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
    max_examples=25,
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
