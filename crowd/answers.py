"""MTurk's answer XML (QuestionFormAnswers) and our ExternalQuestion XML.

The answer of an ExternalQuestion HIT is the form the task page posted to
``{turkSubmitTo}/mturk/externalSubmit``, as::

    <QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd">
      <Answer><QuestionIdentifier>answer</QuestionIdentifier><FreeText>{"schema": ...}</FreeText></Answer>
    </QuestionFormAnswers>

The shape is trusted but the text comes from a worker's browser: documents with a DOCTYPE or
entity declarations are refused before any parser sees them (no entity expansion, no external
entities), and sizes are bounded.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

EXTERNAL_QUESTION_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"
)
MAX_ANSWER_BYTES = 2_000_000
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)


class AnswerXMLError(ValueError):
    """The answer XML cannot be read (malformed, too large, or with a DTD)."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_answer_xml(xml: str) -> dict[str, Any]:
    """Return {QuestionIdentifier: value}; the field ``answer`` is decoded from JSON when it is JSON.

    FreeText answers give a string, SelectionIdentifier answers a list, UploadedFileKey a dict.
    """
    if not xml or not xml.strip():
        return {}
    if len(xml.encode()) > MAX_ANSWER_BYTES:
        raise AnswerXMLError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    if _FORBIDDEN.search(xml):
        raise AnswerXMLError("the answer has a DTD or entity declarations, which are not accepted")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise AnswerXMLError(f"the answer is not well-formed XML: {exc}") from None
    if _local(root.tag) != "QuestionFormAnswers":
        raise AnswerXMLError(f"the answer's root is <{_local(root.tag)}>, not <QuestionFormAnswers>")
    out: dict[str, Any] = {}
    for answer in root:
        if _local(answer.tag) != "Answer":
            continue
        qid, value = None, None
        selections: list[str] = []
        for child in answer:
            name = _local(child.tag)
            if name == "QuestionIdentifier":
                qid = (child.text or "").strip()
            elif name == "FreeText":
                value = child.text or ""
            elif name == "SelectionIdentifier":
                selections.append(child.text or "")
            elif name == "OtherSelectionText":
                value = child.text or ""
            elif name == "UploadedFileKey":
                value = {"key": child.text or ""}
            elif name == "UploadedFileSizeInBytes" and isinstance(value, dict):
                value["size"] = int(child.text or 0)
        if qid is None:
            raise AnswerXMLError("an <Answer> has no <QuestionIdentifier>")
        if selections:
            value = selections
        out[qid] = value
    raw = out.get("answer")
    if isinstance(raw, str):
        try:
            out["answer"] = json.loads(raw)
        except ValueError:
            pass  # left as text; the review rules call it malformed
    return out


def answer_xml(fields: dict[str, str]) -> str:
    """Build a QuestionFormAnswers document (what a marketplace stores for a submitted form)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        '<QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
        '2005-10-01/QuestionFormAnswers.xsd">',
    ]
    for key, value in fields.items():
        parts.append(
            f"<Answer><QuestionIdentifier>{escape(str(key))}</QuestionIdentifier>"
            f"<FreeText>{escape(str(value))}</FreeText></Answer>"
        )
    parts.append("</QuestionFormAnswers>")
    return "".join(parts)


def external_question_xml(url: str, frame_height: int = 0) -> str:
    """An ExternalQuestion pointing at ``url`` (which must be https, see ``check_task_url``)."""
    return (
        f'<ExternalQuestion xmlns="{EXTERNAL_QUESTION_NS}">'
        f"<ExternalURL>{escape(url)}</ExternalURL>"
        f"<FrameHeight>{int(frame_height)}</FrameHeight>"
        "</ExternalQuestion>"
    )


_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[?::1\]?)$", re.IGNORECASE)


def check_task_url(url: str, *, allow_http_loopback: bool) -> str:
    """MTurk shows ExternalURLs in an https page, so they must be https; http only on loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _LOOPBACK.match(parts.hostname) and allow_http_loopback:
        return url
    raise ValueError(
        f"The task URL {url!r} is not https. Set PUBLIC_BASE_URL to the https address workers reach "
        "(plain http is allowed only for a loopback host with DEBUG or CROWD_ALLOW_HTTP_LOOPBACK)."
    )
