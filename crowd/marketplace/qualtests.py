"""Qualification tests: a QuestionForm of multiple-choice questions scored by an AnswerKey.

A subset of MTurk's schemas: each ``Question`` has a ``QuestionIdentifier``, its text
(``QuestionContent/Text``) and a ``SelectionAnswer`` with ``Selections``; the AnswerKey gives each
``AnswerOption`` an ``AnswerScore``, and an optional ``PercentageMapping`` turns the summed score
into a percentage of ``MaximumSummedScore``. Parsing is namespace-agnostic and refuses DTDs.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from crowd.marketplace import errors, questions


@dataclass(frozen=True)
class Choice:
    identifier: str
    text: str


@dataclass(frozen=True)
class TestQuestion:
    identifier: str
    text: str
    choices: tuple[Choice, ...]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node, name: str) -> list:
    return [c for c in node if _local(c.tag) == name]


def _text(node, *path: str) -> str:
    for name in path:
        found = _children(node, name)
        if not found:
            return ""
        node = found[0]
    return (node.text or "").strip()


def _root(xml: str, what: str):
    if questions._PROLOG_DTD.match(xml):
        raise errors.RequestError(f"{what}: document type declarations are not allowed. {errors._stamp()}",
                                  "AWS.MechanicalTurk.XMLParseError")
    try:
        return ET.fromstring(xml.strip())
    except ET.ParseError as exc:
        raise errors.RequestError(f"{what} is not well-formed XML: {exc}. {errors._stamp()}",
                                  "AWS.MechanicalTurk.XMLParseError") from None


def parse_test(xml: str) -> list[TestQuestion]:
    root = _root(xml, "Test")
    if _local(root.tag) != "QuestionForm":
        raise errors.RequestError(f"Test must be a QuestionForm. {errors._stamp()}", "AWS.MechanicalTurk.XMLParseError")
    out = []
    for q in _children(root, "Question"):
        qid = _text(q, "QuestionIdentifier")
        text = _text(q, "QuestionContent", "Text")
        spec = _children(q, "AnswerSpecification")
        selection = _children(spec[0], "SelectionAnswer") if spec else []
        selections = _children(selection[0], "Selections") if selection else []
        choices = tuple(Choice(_text(s, "SelectionIdentifier"), _text(s, "Text"))
                        for s in (_children(selections[0], "Selection") if selections else []))
        if not qid or not choices:
            raise errors.RequestError("Each Test question needs a QuestionIdentifier and a SelectionAnswer with "
                                      f"Selections (multiple choice). {errors._stamp()}",
                                      "AWS.MechanicalTurk.XMLParseError")
        out.append(TestQuestion(qid, text, choices))
    if not out:
        raise errors.RequestError(f"The Test has no Question. {errors._stamp()}", "AWS.MechanicalTurk.XMLParseError")
    return out


def parse_answer_key(xml: str) -> tuple[dict[str, dict[str, int]], int | None]:
    """Scores per question and selection, and the MaximumSummedScore of a PercentageMapping."""
    root = _root(xml, "AnswerKey")
    scores: dict[str, dict[str, int]] = {}
    try:
        for q in _children(root, "Question"):
            scores[_text(q, "QuestionIdentifier")] = {
                _text(o, "SelectionIdentifier"): int(_text(o, "AnswerScore") or 0)
                for o in _children(q, "AnswerOption")}
        maximum = _text(root, "QualificationValueMapping", "PercentageMapping", "MaximumSummedScore")
        return scores, int(maximum) if maximum else None
    except ValueError:
        raise errors.RequestError(f"AnswerScore and MaximumSummedScore must be whole numbers. {errors._stamp()}",
                                  "AWS.MechanicalTurk.XMLParseError") from None


def score(answer_key: str, answers: dict[str, str]) -> int:
    """The qualification value earned by ``answers`` (question id -> selection id)."""
    scores, maximum = parse_answer_key(answer_key)
    total = sum(scores.get(qid, {}).get(choice, 0) for qid, choice in answers.items())
    if maximum:
        return max(0, min(100, round(100 * total / maximum)))
    return total
