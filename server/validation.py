"""Request validation at the edge: one private cattrs converter, strict about types, and
the translation of its errors into the FastAPI-style 422 body that clients of the original
service expect::

    {"detail": [{"loc": ["body", "polling_interval"], "msg": "...", "type": "..."}]}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from engine.errors import BadRequest

T = TypeVar("T")
ErrorItem = dict[str, Any]


class RequestValidationError(BadRequest):
    """The request does not match its schema; ``errors`` name each offending field.
    Answered with ``status`` (422; a subclass may refuse a valid request otherwise)."""

    status = 422

    def __init__(self, errors: list[ErrorItem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class FieldError(ValueError):
    """Raised by attrs validators; names the field so the 422 body can point at it."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.field = field


def check(predicate: Any, msg: str) -> Any:
    """An attrs validator: ``predicate(value)`` must be true, else ``msg`` for that field."""

    def validator(_instance: Any, attribute: Any, value: Any) -> None:
        if not predicate(value):
            raise FieldError(attribute.name, msg)

    return validator


def error(loc: list[str | int], msg: str, type_: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": type_}])


def _strict(expected: type[Any]) -> Any:
    name = {str: "string", int: "integer", float: "number", bool: "boolean"}[expected]

    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and expected is not bool:
            raise TypeError(f"expected {name}, got boolean")
        if expected is float and isinstance(value, int):
            return float(value)
        if expected is int and isinstance(value, float) and value.is_integer():
            return int(value)  # JSON Schema: 140.0 is an integer
        if not isinstance(value, expected):
            raise TypeError(f"expected {name}, got {_json_type(value)}")
        return value

    return hook


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def _mapping_hook(value: Any, type_: Any) -> Any:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected object, got {_json_type(value)}")
    return {converter.structure(k, str): converter.structure(v, str) for k, v in value.items()}


def _object_hook(value: Any, _: Any) -> Any:
    if not isinstance(value, dict):
        raise TypeError(f"expected object, got {_json_type(value)}")
    return value


def _is_list(type_: Any) -> bool:
    return get_origin(type_) is list


def _list_hook(value: Any, type_: Any) -> Any:
    # cattrs would iterate any iterable (an object's keys, a string's characters).
    if not isinstance(value, list):
        raise TypeError(f"expected array, got {_json_type(value)}")
    (item_type,) = get_args(type_) or (Any,)
    if item_type is Any:
        return list(value)
    items, errors = [], []
    for index, item in enumerate(value):
        try:
            items.append(converter.structure(item, item_type))
        except Exception as exc:
            exc.add_note(IterableValidationNote(f"@ index {index}", index, item_type))
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {type_}", errors, type_)
    return items


def _renamed(cls: Any) -> bool:
    return attrs.has(cls) and any(a.metadata.get("contract_name") for a in attrs.fields(cls))


def _renamed_hook(cls: Any) -> Any:
    # A field whose wire name is not a Python name (auth_options "in" → attribute in_).
    renames = {
        a.name: override(rename=a.metadata["contract_name"])
        for a in attrs.fields(cls)
        if a.metadata.get("contract_name")
    }
    fn = make_dict_structure_fn(
        cls,
        converter,
        _cattrs_forbid_extra_keys=True,
        **renames,  # type: ignore[arg-type]
    )
    return fn


converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
converter.register_structure_hook_factory(_renamed, _renamed_hook)
for _t in (str, int, float, bool):
    converter.register_structure_hook(_t, _strict(_t))
converter.register_structure_hook_func(lambda t: t == dict[str, str], _mapping_hook)
converter.register_structure_hook_func(lambda t: t == dict[str, Any], _object_hook)
converter.register_structure_hook_func(_is_list, _list_hook)


def structure(data: Any, cls: type[T], *, where: str = "body") -> T:
    """Build ``cls`` from JSON data or raise :class:`RequestValidationError`."""
    if not isinstance(data, dict):
        raise error([where], f"expected a JSON object, got {_json_type(data)}", "type_error")
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        raise RequestValidationError(list(_walk(exc, [where]))) from None


def _walk(exc: BaseException, loc: list[str | int]) -> Iterator[ErrorItem]:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            notes = [
                n
                for n in getattr(sub, "__notes__", [])
                if isinstance(n, AttributeValidationNote | IterableValidationNote)
            ]
            step: list[str | int] = []
            if notes:
                note = notes[-1]
                step = [note.name if isinstance(note, AttributeValidationNote) else note.index]
            yield from _walk(sub, loc + step)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield {
                "loc": [*loc, key],
                "msg": "extra fields not permitted",
                "type": "extra_forbidden",
            }
    elif isinstance(exc, FieldError):
        yield {"loc": [*loc, exc.field], "msg": str(exc), "type": "value_error"}
    elif isinstance(exc, KeyError):
        yield {"loc": loc, "msg": "field required", "type": "missing"}
    elif isinstance(exc, TypeError | AttributeError):
        yield {"loc": loc, "msg": str(exc), "type": "type_error"}
    else:
        yield {"loc": loc, "msg": str(exc), "type": "value_error"}
