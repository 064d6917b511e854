"""The OpenAPI 3.1 description of every route, served at ``/openapi.json``.

Request bodies and query parameters come from their typed definitions in
:mod:`server.schemas` (see :mod:`server.contract`): the same keywords validate the request
and are published here. What is written by hand is the routes' list and the shapes of the
responses (a test fails when a route and this description disagree). Schemathesis runs
against it in the tests (``tests/test_contract.py``).
"""

from __future__ import annotations

from typing import Any

from engine.auth import SECRET_FIELDS

from . import schemas as bodies
from .contract import JSON_VALUE, object_schema, optional_copy, query_parameters

J = dict[str, Any]


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _static_files(summary: str) -> J:
    """A path item serving bundled files by name (no token needed)."""
    return {
        "get": {
            "summary": summary,
            "security": [],
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "A file"},
                "404": _json(_ref("Error"), "Not found"),
            },
        }
    }


def _json(schema: J, description: str = "OK") -> J:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> J:
    texts = {
        400: "Bad request",
        401: "Missing or invalid bearer token (when SLUICE_API_TOKEN is set)",
        404: "Not found",
        409: "Conflict",
        413: "Request body too large",
        422: "Validation error naming the field",
        503: "Database or engine unavailable; retry",
    }
    out: J = {}
    for code in (401, *codes):
        out[str(code)] = _json(_ref("ValidationError" if code == 422 else "Error"), texts[code])
    return out


CID = {
    "name": "connector_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 100},
}
NULLABLE_STR = {"type": ["string", "null"]}
SECRET_OUT = {
    "type": ["string", "null"],
    "enum": ["****", None],
    "description": "write-only: '****' when set",
}
DECIMAL_OUT = {
    "type": ["number", "string", "null"],
    "description": "the source's exact digits: a JSON number, or a string with numbers=string",
}
DATETIME = {"type": "string", "format": "date-time"}
DATETIME_NULL = {"type": ["string", "null"], "format": "date-time"}

_REFS: dict[str, type[Any]] = {}
CONNECTOR_CREATE = object_schema(bodies.ConnectorCreate, _REFS)
BODIES: J = {
    "ConnectorCreate": CONNECTOR_CREATE,
    "ConnectorUpdate": {
        **optional_copy(CONNECTOR_CREATE),
        "description": "Any subset of the creation fields; the merged result is validated.",
    },
    "SaveMessage": object_schema(bodies.SaveMessage, _REFS),
    "SaveBatch": object_schema(bodies.SaveBatch, _REFS),
    "Preview": object_schema(bodies.Preview, _REFS),
    "RealtimeTest": object_schema(bodies.RealtimeTest, _REFS),
    "JsonValue": JSON_VALUE,
}
for _name, _cls in list(_REFS.items()):
    BODIES[_name] = object_schema(_cls, _REFS)
RECORD: J = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "source_id": {**NULLABLE_STR, "description": "the source's own id (trade id, sequence)"},
        "session_id": {**NULLABLE_STR, "description": "one id per connector run"},
        "connector_id": NULLABLE_STR,
        "timestamp": DATETIME,
        "received_at": DATETIME,
        "exchange": {"type": "string"},
        "instrument": NULLABLE_STR,
        "price": DECIMAL_OUT,
        "size": DECIMAL_OUT,
        "side": NULLABLE_STR,
        "message_type": {"type": "string"},
        "bid_price": DECIMAL_OUT,
        "bid_size": DECIMAL_OUT,
        "ask_price": DECIMAL_OUT,
        "ask_size": DECIMAL_OUT,
        "status_code": {"type": ["integer", "null"], "description": "REST records"},
        "response_time_ms": {"type": ["number", "null"], "description": "REST records"},
        "batch_id": {"type": ["integer", "null"], "description": "saved in a batch"},
        "messageNumber": {"type": ["integer", "null"], "description": "as saved"},
        "format": {**NULLABLE_STR, "description": "as saved"},
        "data": {"description": "the raw payload"},
    },
    "required": [
        "id",
        "source_id",
        "session_id",
        "timestamp",
        "received_at",
        "exchange",
        "message_type",
        "data",
    ],
}

SCHEMAS: J = {
    "Error": {
        "type": "object",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "ValidationError": {
        "type": "object",
        "properties": {
            "detail": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                        "msg": {"type": "string"},
                        "type": {"type": "string"},
                    },
                    "required": ["loc", "msg", "type"],
                },
            }
        },
        "required": ["detail"],
    },
    **BODIES,
    "Connector": {
        "type": "object",
        "properties": {
            "connector_id": {"type": "string"},
            **{
                k: {key: val for key, val in v.items() if key not in ("default", "writeOnly")}
                for k, v in CONNECTOR_CREATE["properties"].items()
            },
            "protocol": {"type": "string", "enum": ["websocket", "rest"]},
            "exchange": {"type": "string"},
            **dict.fromkeys(SECRET_FIELDS, SECRET_OUT),
            "auth_options": {"type": "object"},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "values as given, credentials shown as '****'",
            },
            "query_params": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "values as given, credentials shown as '****'",
            },
            "status": {"type": "string"},
            "created_at": DATETIME,
            "updated_at": DATETIME,
        },
        "required": ["connector_id", "name", "api_url", "protocol", "exchange", "status"],
    },
    "ConnectorList": {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": _ref("Connector")},
            "count": {"type": "integer"},
        },
        "required": ["data", "count"],
    },
    "StartStop": {
        "type": "object",
        "properties": {
            "connector_id": {"type": "string"},
            "status": {"type": "string"},
            "detail": NULLABLE_STR,
        },
        "required": ["connector_id", "status"],
    },
    "ConnectorStatus": {
        "type": "object",
        "properties": {
            "connector_id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["inactive", "connecting", "running", "reconnecting", "stopped", "error"],
            },
            "messages_received": {"type": "integer"},
            "records_stored": {"type": "integer"},
            "messages_rejected": {"type": "integer"},
            "control_messages": {"type": "integer"},
            "errors": {"type": "integer"},
            "reconnects": {"type": "integer"},
            "last_message_at": DATETIME_NULL,
            "last_error": NULLABLE_STR,
            "started_at": DATETIME_NULL,
            "messages_gap": {"type": "integer"},
            "records_duplicate": {"type": "integer"},
            "rejected_by_category": {"type": "object", "additionalProperties": {"type": "integer"}},
            "requests": {"type": "integer"},
            "skipped_ticks": {"type": "integer"},
            "last_status_code": {"type": ["integer", "null"]},
            "accounting": {"type": "object", "additionalProperties": {"type": "integer"}},
            "instance_id": {
                "type": ["string", "null"],
                "description": "the cluster instance that runs (or last ran) it",
            },
            "updated_at": DATETIME_NULL,
            "actor": {"type": "object"},
        },
        "required": ["connector_id", "status", "messages_received", "records_stored"],
    },
    "Record": RECORD,
    "Batch": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "connector_id": NULLABLE_STR,
            "exchange": {"type": "string"},
            "message_count": {"type": "integer"},
            "metrics": {"type": "object"},
            "received_at": DATETIME,
        },
        "required": ["id", "exchange", "message_count", "metrics", "received_at"],
    },
    "RecordPage": {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": _ref("Record")},
            "count": {"type": "integer"},
            "limit": {"type": "integer"},
            "skip": {"type": "integer"},
            "next_after_id": {"type": ["integer", "null"]},
        },
        "required": ["data", "count", "limit", "skip"],
    },
    "Listing": {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": {"type": "object"}},
            "count": {"type": "integer"},
        },
        "required": ["data", "count"],
    },
    "SaveResult": {
        "type": "object",
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer"}},
            "stored": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "rejected": {"type": "array", "items": {"type": "object"}},
            "batch_id": {"type": "integer"},
            "message_count": {"type": "integer"},
        },
        "required": ["ids", "stored", "duplicates", "rejected"],
    },
    "PreviewResult": {
        "type": "object",
        "properties": {
            "exchange": {"type": "string"},
            "records": {"type": "array", "items": {"type": "object"}},
            "control": {"type": ["object", "null"]},
            "rejected": {
                "type": ["object", "null"],
                "description": "why the message would be rejected: category and detail",
            },
        },
        "required": ["records", "control", "rejected"],
    },
}

LIMIT_100 = query_parameters(bodies.ListingQuery)
DATA_QUERY = query_parameters(bodies.DataQuery)
COUNT_QUERY = query_parameters(bodies.DataFilterQuery)


def _body(name: str) -> J:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def build() -> J:
    body = _body
    paths: J = {
        "/api/connectors": {
            "post": {
                "summary": "Create a connector",
                "requestBody": body("ConnectorCreate"),
                "responses": {
                    "201": _json(_ref("Connector"), "Created"),
                    "403": _json(_ref("ValidationError"), "api_url refused by the egress policy"),
                    **_errors(413, 422, 503),
                },
            },
            "get": {
                "summary": "List connectors",
                "responses": {"200": _json(_ref("ConnectorList")), **_errors(503)},
            },
        },
        "/api/connectors/statuses": {
            "get": {
                "summary": "Every connector's status in one answer",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "data": {"type": "array", "items": _ref("ConnectorStatus")},
                                "count": {"type": "integer"},
                            },
                            "required": ["data", "count"],
                        }
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/connectors/{connector_id}": {
            "parameters": [CID],
            "get": {
                "summary": "One connector",
                "responses": {"200": _json(_ref("Connector")), **_errors(404, 503)},
            },
            "put": {
                "summary": "Change any subset of the creation fields",
                "requestBody": body("ConnectorUpdate"),
                "responses": {
                    "200": _json(_ref("Connector")),
                    "403": _json(_ref("ValidationError"), "api_url refused by the egress policy"),
                    **_errors(404, 413, 422, 503),
                },
            },
            "delete": {
                "summary": "Stop and remove a connector",
                "parameters": query_parameters(bodies.DeleteQuery),
                "responses": {"204": {"description": "Deleted"}, **_errors(404, 422, 503)},
            },
        },
        "/api/connectors/{connector_id}/start": {
            "parameters": [CID],
            "post": {
                "summary": "Start (idempotent)",
                "responses": {
                    "200": _json(_ref("StartStop")),
                    "409": _json(_ref("StartStop"), "Cannot start: credentials do not decrypt"),
                    **_errors(404, 503),
                },
            },
        },
        "/api/connectors/{connector_id}/stop": {
            "parameters": [CID],
            "post": {
                "summary": "Stop (idempotent)",
                "responses": {"200": _json(_ref("StartStop")), **_errors(404, 503)},
            },
        },
        "/api/connectors/{connector_id}/status": {
            "parameters": [CID],
            "get": {
                "summary": "Live status, counters and accounting",
                "responses": {"200": _json(_ref("ConnectorStatus")), **_errors(404, 503)},
            },
        },
        "/api/connectors/{connector_id}/data": {
            "parameters": [CID],
            "get": {
                "summary": "The connector's records, newest first by default",
                "parameters": query_parameters(bodies.ConnectorDataQuery),
                "responses": {"200": _json(_ref("RecordPage")), **_errors(404, 422, 503)},
            },
        },
        **{
            f"/api/connectors/{{connector_id}}/{kind}": {
                "parameters": [CID],
                "get": {
                    "summary": text,
                    "parameters": LIMIT_100,
                    "responses": {"200": _json(_ref("Listing")), **_errors(404, 422, 503)},
                },
            }
            for kind, text in (
                ("gaps", "Recorded gaps, newest first"),
                ("errors", "Connector errors, newest first"),
                ("rejected", "Dead letters, newest first"),
            )
        },
        "/api/websocket/save": {
            "post": {
                "summary": "Store one message; 201 only after commit",
                "requestBody": body("SaveMessage"),
                "responses": {
                    "201": _json(_ref("SaveResult"), "Committed"),
                    **_errors(413, 422, 503),
                },
            }
        },
        "/api/websocket/save-batch": {
            "post": {
                "summary": "Store a batch of messages with metrics; 201 only after commit",
                "requestBody": body("SaveBatch"),
                "responses": {
                    "201": _json(_ref("SaveResult"), "Committed"),
                    **_errors(413, 422, 503),
                },
            }
        },
        "/api/websocket/data": {
            "get": {
                "summary": "Stored messages or batches; large pages are streamed",
                "parameters": DATA_QUERY,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "data": {
                                    "type": "array",
                                    "items": {"anyOf": [_ref("Record"), _ref("Batch")]},
                                },
                                "count": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "skip": {"type": "integer"},
                                "next_after_id": {"type": ["integer", "null"]},
                            },
                            "required": ["data", "count", "limit", "skip"],
                        }
                    ),
                    **_errors(422, 503),
                },
            }
        },
        "/api/websocket/data.csv": {
            "get": {
                "summary": "The same query as /api/websocket/data as a CSV download, streamed",
                "parameters": DATA_QUERY,
                "responses": {
                    "200": {
                        "description": "A header row, then one row per record (or batch); "
                        "numbers with their stored digits, the payload as JSON text",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    **_errors(422, 503),
                },
            }
        },
        "/api/websocket/data/count": {
            "get": {
                "summary": "How many stored messages or batches match",
                "parameters": COUNT_QUERY,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"count": {"type": "integer"}},
                            "required": ["count"],
                        }
                    ),
                    **_errors(422, 503),
                },
            }
        },
        "/api/normalize/preview": {
            "post": {
                "summary": "Normalize one message without storing it",
                "requestBody": body("Preview"),
                "responses": {"200": _json(_ref("PreviewResult")), **_errors(404, 413, 422, 503)},
            }
        },
        "/api/realtime": {
            "get": {
                "summary": "WebSocket: committed records, gap notices, test messages",
                "description": "Upgrade to a WebSocket. See the README for the protocol.",
                "parameters": query_parameters(bodies.RealtimeQuery),
                "responses": {
                    "101": {"description": "Switching protocols"},
                    "426": _json(_ref("Error"), "Not a WebSocket upgrade request"),
                    "403": _json(_ref("Error"), "Origin not allowed"),
                    **_errors(422, 503),
                },
            }
        },
        "/api/realtime/test": {
            "post": {
                "summary": "Broadcast a test message to every subscriber",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("RealtimeTest")}},
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "delivered": {"type": "integer"},
                                "subscribers": {"type": "integer"},
                            },
                            "required": ["delivered", "subscribers"],
                        }
                    ),
                    **_errors(422),
                },
            }
        },
        "/api/cluster": {
            "get": {
                "summary": "Live instances on this database and the connectors each runs",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "instance_id": {"type": "string"},
                                "instances": {"type": "array", "items": {"type": "object"}},
                                "leases": {"type": "array", "items": {"type": "object"}},
                            },
                            "required": ["instance_id", "instances", "leases"],
                        }
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/postgres/status": {
            "get": {
                "summary": "Database connection and table sizes",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "status": {"type": "string"},
                                "database": {"type": "string"},
                                "version": {"type": "string"},
                                "embedded": {"type": "boolean"},
                                "tables": {
                                    "type": "object",
                                    "description": "Rows per table: exact up to a million,"
                                    " the planner's estimate above.",
                                    "additionalProperties": {"type": "integer"},
                                },
                            },
                            "required": ["status", "tables"],
                        }
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/debug/tasks": {
            "get": {
                "summary": "The live Trio task tree",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "tree": {"type": "object"},
                                "loop": {"type": ["object", "null"]},
                            },
                            "required": ["tree"],
                        }
                    )
                },
            }
        },
        "/api/debug/actors": {
            "get": {
                "summary": "Actor statistics and channel backpressure",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "channels": {"type": "object"},
                                "supervisors": {"type": "array"},
                            },
                            "required": ["channels", "supervisors"],
                        }
                    )
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Process is up",
                "security": [],
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Ready for traffic",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}),
                    "503": _json({"type": "object"}, "Not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "security": [],
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/docs/static/{name}": _static_files("Swagger UI's files, bundled"),
        "/": {
            "get": {
                "summary": "The web console (connectors, live data, stored data, system)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/console/{name}": _static_files("The console's script, styles and vendored chart"),
        "/docs": {
            "get": {
                "summary": "Interactive API documentation (works offline)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice",
            "version": "0.1.0",
            "description": "Real-time ETL: WebSocket and REST sources into PostgreSQL, "
            "pushed live to subscribers.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "SLUICE_API_TOKEN, when set",
                }
            },
        },
        "security": [{"bearer": []}, {}],
    }


SPEC = build()
