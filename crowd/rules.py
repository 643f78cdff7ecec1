"""The project's review rules: approve or reject one answer, with feedback the worker reads.

Pure functions over plain data (the answer as stored, the stage's gold answers); nothing here
touches the database or a provider, so the rules are tested alone.

- no answer at all, or one that cannot be read: reject;
- empty work (no image answered, no decision made, no outline drawn): reject;
- known (gold) items: count how many the worker got right; below the stage's minimum share,
  reject and say how many were wrong;
- otherwise approve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Judgement:
    approve: bool
    feedback: str
    gold_seen: int = 0
    gold_correct: int = 0

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


NO_ANSWER = (
    "We received no answer for this assignment on our server, so there is nothing to pay for. "
    "If you did the work, please contact us with the assignment id."
)
UNREADABLE = "Your answer could not be read (it was malformed). Please reload the task page and try again."
EMPTY = "The answer was empty: {what}."
GOLD = "{wrong} of {seen} items with known answers were answered wrongly (at least {need:.0%} must be right)."
THANKS = "Thank you for your work."


def _gold_categories(answer: dict, gold: dict) -> tuple[int, int]:
    seen = correct = 0
    for entry in answer.get("images", []):
        key = str(entry.get("image"))
        if key in gold:
            seen += 1
            correct += sorted(entry.get("present", [])) == sorted(gold[key])
    return seen, correct


def _gold_verification(answer: dict, gold: dict) -> tuple[int, int]:
    seen = correct = 0
    for d in answer.get("decisions", []):
        key = str(d.get("polygon"))
        if key in gold:
            seen += 1
            correct += bool(d.get("accept")) == bool(gold[key])
    return seen, correct


def _empty(kind: str, answer: dict) -> str | None:
    if kind == "categories" and not answer.get("images"):
        return "no image was answered"
    if kind == "verification" and not answer.get("decisions"):
        return "no outline was accepted or rejected"
    if kind == "segmentation" and not answer.get("parts"):
        return "no outline was drawn"
    if kind == "training" and not answer.get("items"):
        return "no outline was drawn"
    if kind == "spotting" and "points" not in answer:
        return "no points were sent"
    return None


def judge(*, kind: str, answer: Any, gold: dict | None, min_gold_accuracy: float) -> Judgement:
    if answer is None or answer == {} or answer == "":
        return Judgement(False, NO_ANSWER)
    if not isinstance(answer, dict):
        return Judgement(False, UNREADABLE)
    empty = _empty(kind, answer)
    if empty:
        return Judgement(False, EMPTY.format(what=empty))
    seen = correct = 0
    if gold:
        if kind == "categories":
            seen, correct = _gold_categories(answer, gold)
        elif kind == "verification":
            seen, correct = _gold_verification(answer, gold)
    if seen and min_gold_accuracy > 0 and correct / seen < min_gold_accuracy:
        return Judgement(False, GOLD.format(wrong=seen - correct, seen=seen, need=min_gold_accuracy), seen, correct)
    return Judgement(True, THANKS, seen, correct)
