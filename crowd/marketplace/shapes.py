"""Requests and responses checked against botocore's own MTurk service model.

``validate(shape, value)`` walks a botocore shape (structures, lists, maps, strings, numbers,
booleans, timestamps) and reports every broken rule the way AWS front doors do ("1 validation
error detected: Value null at 'title' failed to satisfy constraint: Member must not be null").
``to_wire(shape, value)`` turns Python values into the JSON protocol's form (timestamps become
epoch seconds) and drops members the shape does not have.
"""
from __future__ import annotations

import functools
import re
from datetime import datetime
from decimal import Decimal

import botocore.session
from botocore.model import OperationModel, Shape

OPERATIONS = frozenset({
    "CreateHITType", "CreateHIT", "CreateHITWithHITType", "GetHIT", "ListHITs", "ListReviewableHITs",
    "UpdateHITReviewStatus", "UpdateExpirationForHIT", "DeleteHIT", "ListAssignmentsForHIT",
    "GetAssignment", "ApproveAssignment", "RejectAssignment", "SendBonus", "ListBonusPayments",
    "CreateQualificationType", "GetQualificationType", "AssociateQualificationWithWorker",
    "DisassociateQualificationFromWorker", "ListWorkersWithQualificationType", "CreateWorkerBlock",
    "DeleteWorkerBlock", "ListWorkerBlocks", "NotifyWorkers", "GetAccountBalance",
    "CreateAdditionalAssignmentsForHIT",
})


@functools.lru_cache(maxsize=1)
def service_model():
    return botocore.session.get_session().get_service_model("mturk")


@functools.lru_cache(maxsize=64)
def operation(name: str) -> OperationModel | None:
    model = service_model()
    if name not in model.operation_names:
        return None
    return model.operation_model(name)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _describe(value) -> str:
    if value is None:
        return "null"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(shape: Shape | None, value, path: str = "") -> list[str]:
    """Every broken constraint of ``value`` against ``shape``, as AWS words them."""
    problems: list[str] = []
    if shape is None:
        return problems
    _check(shape, value, path, problems)
    return problems


def _check(shape: Shape, value, path: str, out: list[str]) -> None:
    kind = shape.type_name
    where = path or shape.name
    if kind == "structure":
        if not isinstance(value, dict):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be an object")
            return
        for name in shape.required_members:
            if value.get(name) is None:
                out.append(f"Value null at '{_join(path, name)}' failed to satisfy constraint: Member must not be null")
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None:
                out.append(f"Unknown parameter '{_join(path, name)}'")
            elif item is not None:
                _check(member, item, _join(path, name), out)
        return
    if kind == "list":
        if not isinstance(value, list):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be a list")
            return
        _range(shape, len(value), where, value, out, "length")
        for i, item in enumerate(value):
            _check(shape.member, item, f"{where}.{i + 1}", out)
        return
    if kind == "map":
        if not isinstance(value, dict):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be a map")
        return
    if kind == "string":
        if not isinstance(value, str):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be a string")
            return
        _range(shape, len(value), where, value, out, "length")
        enum = shape.enum
        if enum and value not in enum:
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: "
                       f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = shape.metadata.get("pattern")
        if pattern and not re.search(pattern, value):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: "
                       f"Member must satisfy regular expression pattern: {pattern}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be an integer")
            return
        _range(shape, value, where, value, out, "value")
        return
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be a number")
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be a boolean")
        return
    if kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, float, datetime)):
            out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: Member must be a timestamp")
        return


def _join(path: str, name: str) -> str:
    return f"{path}.{_camel(name)}" if path else _camel(name)


def _range(shape: Shape, measure, where: str, value, out: list[str], what: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and measure < low:
        out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: "
                   f"Member must have {what} greater than or equal to {low}")
    if high is not None and measure > high:
        out.append(f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: "
                   f"Member must have {what} less than or equal to {high}")


def summarize(problems: list[str]) -> str:
    count = len(problems)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(problems)


def to_wire(shape: Shape, value):
    """A Python response (datetimes, Decimals) in the JSON protocol's form for ``shape``."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                out[name] = to_wire(member, value[name])
        return out
    if kind == "list":
        return [to_wire(shape.member, item) for item in value]
    if kind == "timestamp":
        if isinstance(value, datetime):
            return round(value.timestamp(), 3)
        return value
    if kind in ("double", "float") and isinstance(value, Decimal):
        return float(value)
    if kind == "string" and isinstance(value, Decimal):
        return str(value)
    return value
