"""The Question parameter: ExternalQuestion or HTMLQuestion XML, parsed as MTurk does.

Parsing uses the standard library's ElementTree on a document that may not declare entities
(``<!DOCTYPE`` is refused), so an external entity or a billion-laughs payload is never expanded.
"""
from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from crowd.marketplace import errors

MAX_QUESTION_CHARS = 65535
NS_EXTERNAL = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"
NS_HTML = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"
LOOPBACK_NAMES = {"localhost", "testserver"}
# A DTD can only stand in the prolog, before the root element; a "<!DOCTYPE html>" inside an
# HTMLQuestion's CDATA is content, not a declaration.
_PROLOG_DTD = re.compile(r"\s*(?:<\?xml.*?\?>\s*)?(?:<!--.*?-->\s*)*<!DOCTYPE", re.I | re.S)


@dataclass(frozen=True)
class ParsedQuestion:
    kind: str
    external_url: str = ""
    html_content: str = ""
    frame_height: int = 0


def _xml_error(message: str) -> errors.RequestError:
    return errors.RequestError(f"There was an error parsing the XML question or answer data in your request. "
                               f"{message} {errors._stamp()}", "AWS.MechanicalTurk.XMLParseError")


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_external_url(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("http", "https"):
        raise _xml_error(f"ExternalURL {url!r} is not an absolute http(s) URL.")
    if parts.scheme == "http":
        allow = getattr(settings, "MARKETPLACE_ALLOW_HTTP_LOOPBACK", False) or settings.DEBUG
        if not (allow and _is_loopback(host)):
            raise errors.RequestError(
                f"The ExternalURL must use HTTPS: {url} (plain http is accepted only for loopback hosts "
                f"when MARKETPLACE_ALLOW_HTTP_LOOPBACK or DEBUG is on). {errors._stamp()}",
                "AWS.MechanicalTurk.InvalidURL",
            )
    return url


def parse(question: str) -> ParsedQuestion:
    if len(question) > MAX_QUESTION_CHARS:
        raise errors.parameter(f"Question is {len(question)} characters; the limit is {MAX_QUESTION_CHARS} (64 KB).")
    if _PROLOG_DTD.match(question):
        raise _xml_error("Document type declarations are not allowed.")
    try:
        root = ET.fromstring(question.strip())
    except ET.ParseError as exc:
        raise _xml_error(str(exc)) from None
    ns, name = _local(root.tag)
    children = {_local(child.tag)[1]: (child.text or "").strip() for child in root}
    try:
        height = int(children.get("FrameHeight") or 0)
    except ValueError:
        raise _xml_error("FrameHeight must be a whole number of pixels.") from None
    if name == "ExternalQuestion":
        if ns != NS_EXTERNAL:
            raise _xml_error(f"ExternalQuestion must be in the namespace {NS_EXTERNAL}.")
        url = children.get("ExternalURL", "")
        if not url:
            raise _xml_error("ExternalQuestion needs an ExternalURL.")
        return ParsedQuestion("ExternalQuestion", external_url=check_external_url(url), frame_height=height)
    if name == "HTMLQuestion":
        if ns != NS_HTML:
            raise _xml_error(f"HTMLQuestion must be in the namespace {NS_HTML}.")
        html = next((child.text or "" for child in root if _local(child.tag)[1] == "HTMLContent"), "")
        if not html.strip():
            raise _xml_error("HTMLQuestion needs HTMLContent.")
        return ParsedQuestion("HTMLQuestion", html_content=html, frame_height=height)
    raise _xml_error(f"The question must be an ExternalQuestion or an HTMLQuestion, not {name}.")
