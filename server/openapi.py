"""The OpenAPI 3.1 description of every route, served at ``/openapi.json``.

Written by hand next to the routes (a test fails when a route and this description
disagree), with the limits the code enforces. Schemathesis runs against it in the tests.
"""

from __future__ import annotations

from typing import Any

from engine.auth import AUTH_TYPES
from engine.normalize.mapping import FIELDS as MAPPING_FIELDS
from engine.storage.queries import BATCH_SORTABLE, MESSAGE_SORTABLE, SORTABLE

from .schemas import HTTP_METHODS, MAX_BATCH_MESSAGES

J = dict[str, Any]


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


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


def _q(name: str, schema: J, description: str = "") -> J:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


CID = {
    "name": "connector_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 100},
}
LIMIT_100 = _q("limit", {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 100})
NULLABLE_STR = {"type": ["string", "null"]}
SECRET_OUT = {
    "type": ["string", "null"],
    "enum": ["****", None],
    "description": "write-only: '****' when set",
}
DECIMAL_OUT = {"type": ["string", "null"], "description": "exact decimal text"}
DATETIME = {"type": "string", "format": "date-time"}
DATETIME_NULL = {"type": ["string", "null"], "format": "date-time"}

CONNECTOR_FIELDS: J = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "api_url": {
        "type": "string",
        "maxLength": 2048,
        "description": "ws://, wss://, http:// or https:// URL",
    },
    "http_method": {"type": "string", "enum": list(HTTP_METHODS), "default": "GET"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 50},
    "query_params": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "maxProperties": 50,
    },
    "auth_type": {"type": "string", "enum": list(AUTH_TYPES), "default": "None"},
    "polling_interval": {"type": "integer", "minimum": 100, "maximum": 86_400_000, "default": 1000},
    "subscribe_messages": {"type": "array", "maxItems": 100, "items": {}},
    "exchange": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_]{1,50}$"},
    "ping_interval": {"type": "number", "minimum": 0, "maximum": 3600, "default": 20},
    "pong_timeout": {"type": "number", "minimum": 1, "maximum": 600, "default": 10},
    "stale_timeout": {"type": "number", "minimum": 0, "maximum": 86_400, "default": 0},
    "app_ping": {"type": ["string", "null"], "maxLength": 1000},
    "app_ping_interval": {"type": "number", "minimum": 1, "maximum": 3600, "default": 25},
    "field_mapping": {
        "type": ["object", "null"],
        "propertyNames": {"enum": list(MAPPING_FIELDS)},
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "retention_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 100_000},
    "auth_options": {"type": "object"},
    "request_body": {},
}
SECRET_IN = {
    name: {"type": ["string", "null"], "minLength": 1, "maxLength": 4096, "writeOnly": True}
    for name in ("api_key", "api_secret", "passphrase", "bearer_token", "username", "password")
}

RECORD: J = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
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
        "batch_id": {"type": ["integer", "null"]},
        "data": {"description": "the raw payload"},
    },
    "required": ["id", "timestamp", "received_at", "exchange", "message_type", "data"],
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
    "ConnectorCreate": {
        "type": "object",
        "properties": {**CONNECTOR_FIELDS, **SECRET_IN},
        "required": ["name", "api_url"],
        "additionalProperties": False,
    },
    "ConnectorUpdate": {
        "type": "object",
        "properties": {**CONNECTOR_FIELDS, **SECRET_IN},
        "additionalProperties": False,
    },
    "Connector": {
        "type": "object",
        "properties": {
            "connector_id": {"type": "string"},
            **{
                k: {**v, "default": None} if k == "exchange" else v
                for k, v in CONNECTOR_FIELDS.items()
            },
            "protocol": {"type": "string", "enum": ["websocket", "rest"]},
            "exchange": {"type": "string"},
            **dict.fromkeys(SECRET_IN, SECRET_OUT),
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
            "actor": {"type": "object"},
        },
        "required": ["connector_id", "status", "messages_received", "records_stored"],
    },
    "Record": RECORD,
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
    "SaveMessage": {
        "type": "object",
        "properties": {
            "data": {"type": ["object", "array"]},
            "exchange": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,50}$", "default": "custom"},
            "connector_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 100},
            "instrument": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
            "price": {"type": ["string", "number", "null"]},
            "size": {"type": ["string", "number", "null"]},
            "side": {"type": ["string", "null"], "minLength": 1, "maxLength": 20},
            "message_type": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
            "timestamp": {"type": ["string", "number", "null"]},
            "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
        },
        "required": ["data"],
        "additionalProperties": False,
    },
    "SaveBatch": {
        "type": "object",
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_MESSAGES,
                "items": _ref("SaveMessage"),
            },
            "metrics": {"type": "object"},
            "connector_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 100},
            "exchange": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,50}$"},
        },
        "required": ["messages"],
        "additionalProperties": False,
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
    "Preview": {
        "type": "object",
        "properties": {
            "message": {},
            "connector_id": {"type": ["string", "null"], "maxLength": 100},
            "exchange": {"type": ["string", "null"], "maxLength": 50},
            "field_mapping": CONNECTOR_FIELDS["field_mapping"],
        },
        "required": ["message"],
        "additionalProperties": False,
    },
    "PreviewResult": {
        "type": "object",
        "properties": {
            "exchange": {"type": "string"},
            "records": {"type": "array", "items": {"type": "object"}},
            "control": {"type": ["object", "null"]},
        },
        "required": ["records", "control"],
    },
}

DATA_FILTERS = [
    _q("exchange", {"type": "string"}),
    _q("instrument", {"type": "string"}),
    _q("connector_id", {"type": "string"}),
    _q("from", {"type": "string"}, "ISO 8601 time or epoch seconds/milliseconds (source time)"),
    _q("to", {"type": "string"}, "ISO 8601 time or epoch seconds/milliseconds, exclusive"),
    _q("after_id", {"type": "integer", "minimum": 0}, "keyset pagination; needs sort_by=id"),
    _q("collection_type", {"type": "string", "enum": ["messages", "batches"]}),
]


def _body(name: str) -> J:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def build() -> J:
    body = _body
    paths: J = {
        "/api/connectors": {
            "post": {
                "summary": "Create a connector",
                "requestBody": body("ConnectorCreate"),
                "responses": {"201": _json(_ref("Connector"), "Created"), **_errors(413, 422, 503)},
            },
            "get": {
                "summary": "List connectors",
                "responses": {"200": _json(_ref("ConnectorList")), **_errors(503)},
            },
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
                "responses": {"200": _json(_ref("Connector")), **_errors(404, 413, 422, 503)},
            },
            "delete": {
                "summary": "Stop and remove a connector",
                "parameters": [
                    _q("purge_data", {"type": "string", "enum": ["true", "false", "1", "0"]})
                ],
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
                "parameters": [
                    LIMIT_100,
                    _q("skip", {"type": "integer", "minimum": 0, "maximum": 10_000_000}),
                    _q("sort_by", {"type": "string", "enum": sorted(SORTABLE)}),
                    _q("sort_order", {"type": "integer", "enum": [-1, 1]}),
                ],
                "responses": {"200": _json(_ref("RecordPage")), **_errors(404, 422, 503)},
            },
        },
        **{
            f"/api/connectors/{{connector_id}}/{kind}": {
                "parameters": [CID],
                "get": {
                    "summary": text,
                    "parameters": [LIMIT_100],
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
                "parameters": [
                    *DATA_FILTERS,
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 100_000}),
                    _q("skip", {"type": "integer", "minimum": 0, "maximum": 10_000_000}),
                    _q(
                        "sort_by",
                        {"type": "string", "enum": sorted(MESSAGE_SORTABLE | BATCH_SORTABLE)},
                    ),
                    _q("sort_order", {"type": "integer", "enum": [-1, 1]}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "data": {"type": "array", "items": {"type": "object"}},
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
        "/api/websocket/data/count": {
            "get": {
                "summary": "How many stored messages or batches match",
                "parameters": [p for p in DATA_FILTERS if p["name"] != "after_id"],
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
                "parameters": [
                    _q("connector_id", {"type": "string"}),
                    _q("exchange", {"type": "string"}),
                    _q("instrument", {"type": "string", "maxLength": 200}),
                    _q("types", {"type": "string"}, "comma-separated message types"),
                    _q("batch", {"type": "boolean"}),
                    _q("token", {"type": "string"}, "the API token, if required"),
                ],
                "responses": {
                    "101": {"description": "Switching protocols"},
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
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"message": {}},
                                "additionalProperties": False,
                            }
                        }
                    },
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
        "/docs/static/{name}": {
            "get": {
                "summary": "Swagger UI's files, bundled",
                "security": [],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "A file"},
                    "404": _json(_ref("Error"), "Not found"),
                },
            }
        },
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
