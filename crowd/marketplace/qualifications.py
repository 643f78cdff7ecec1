"""Qualification requirements: checking them when a HIT type is made, and deciding for a worker.

Pure functions over plain data (the requirement dicts as they arrive on the wire and a mapping of
the worker's values), so the rules are tested without a database. MTurk's system qualification
types for locale, approval count and approval rate are computed from the worker's record.
"""
from __future__ import annotations

from dataclasses import dataclass

from crowd.marketplace import errors

LOCALE = "00000000000000000071"
NUMBER_HITS_APPROVED = "00000000000000000040"
PERCENT_APPROVED = "000000000000000000L0"
SYSTEM_TYPES = {
    LOCALE: "Worker_Locale",
    NUMBER_HITS_APPROVED: "Worker_NumberHITsApproved",
    PERCENT_APPROVED: "Worker_PercentAssignmentsApproved",
}
ACTIONS = ("Discover", "Preview", "Accept")
_GUARDS = {
    "Accept": {"Accept"},
    "PreviewAndAccept": {"Preview", "Accept"},
    "DiscoverPreviewAndAccept": {"Discover", "Preview", "Accept"},
}
_INTEGER_ONE = {"LessThan", "LessThanOrEqualTo", "GreaterThan", "GreaterThanOrEqualTo"}


@dataclass(frozen=True)
class Locale:
    country: str
    subdivision: str = ""


def _bad(message: str) -> errors.RequestError:
    return errors.RequestError(f"{message} {errors._stamp()}", "AWS.MechanicalTurk.InvalidQualificationRequirement")


def normalize(requirements: list[dict], *, known_type_ids: set[str]) -> list[dict]:
    """Check requirements as MTurk does and return them in a canonical form."""
    out = []
    for req in requirements or []:
        qtid = req["QualificationTypeId"]
        comparator = req["Comparator"]
        ints = list(req.get("IntegerValues") or [])
        locales = [{k: v for k, v in loc.items() if v} for loc in (req.get("LocaleValues") or [])]
        if qtid not in SYSTEM_TYPES and qtid not in known_type_ids:
            raise errors.qualification_type_not_found(qtid)
        if ints and locales:
            raise _bad("A QualificationRequirement takes IntegerValues or LocaleValues, not both.")
        if qtid == LOCALE and ints:
            raise _bad("The Worker_Locale qualification is compared with LocaleValues.")
        if qtid != LOCALE and locales:
            raise _bad(f"Only the Worker_Locale qualification ({LOCALE}) takes LocaleValues.")
        if comparator in ("Exists", "DoesNotExist"):
            if ints or locales:
                raise _bad(f"The {comparator} comparator takes no values.")
        elif comparator in _INTEGER_ONE:
            if len(ints) != 1 or locales:
                raise _bad(f"The {comparator} comparator takes exactly one IntegerValue.")
        elif comparator in ("EqualTo", "NotEqualTo"):
            if len(ints) + len(locales) != 1:
                raise _bad(f"The {comparator} comparator takes exactly one IntegerValue or LocaleValue.")
        elif comparator in ("In", "NotIn"):
            if not 1 <= len(ints) + len(locales) <= 30:
                raise _bad(f"The {comparator} comparator takes between 1 and 30 values.")
        if "ActionsGuarded" in req and req.get("RequiredToPreview") is not None:
            raise _bad("ActionsGuarded cannot be used together with RequiredToPreview.")
        guarded = req.get("ActionsGuarded") or ("PreviewAndAccept" if req.get("RequiredToPreview") else "Accept")
        item = {"QualificationTypeId": qtid, "Comparator": comparator, "ActionsGuarded": guarded}
        if ints:
            item["IntegerValues"] = ints
        if locales:
            item["LocaleValues"] = locales
        out.append(item)
    return out


def _locale_matches(worker: Locale, wanted: dict) -> bool:
    if worker.country != wanted.get("Country"):
        return False
    sub = wanted.get("Subdivision")
    return not sub or sub == worker.subdivision


def meets(requirement: dict, value) -> bool:
    """Whether a worker holding ``value`` (an int, a Locale, or None) meets one requirement."""
    comparator = requirement["Comparator"]
    if comparator == "DoesNotExist":
        return value is None
    if value is None:
        return False
    if comparator == "Exists":
        return True
    if isinstance(value, Locale):
        wanted = requirement.get("LocaleValues") or []
        hit = any(_locale_matches(value, loc) for loc in wanted)
        return hit if comparator in ("EqualTo", "In") else not hit if comparator in ("NotEqualTo", "NotIn") else False
    ints = requirement.get("IntegerValues") or []
    first = ints[0] if ints else None
    return {
        "LessThan": lambda: value < first,
        "LessThanOrEqualTo": lambda: value <= first,
        "GreaterThan": lambda: value > first,
        "GreaterThanOrEqualTo": lambda: value >= first,
        "EqualTo": lambda: value == first,
        "NotEqualTo": lambda: value != first,
        "In": lambda: value in ints,
        "NotIn": lambda: value not in ints,
    }[comparator]()


def allowed_actions(requirements: list[dict], values: dict) -> set[str]:
    """The actions (Discover, Preview, Accept) a worker with ``values`` may take on a HIT type."""
    allowed = set(ACTIONS)
    for req in requirements:
        if not meets(req, values.get(req["QualificationTypeId"])):
            allowed -= _GUARDS[req.get("ActionsGuarded", "Accept")]
    # Guards nest: whoever cannot preview cannot accept; whoever cannot discover cannot preview.
    if "Discover" not in allowed:
        allowed.discard("Preview")
    if "Preview" not in allowed:
        allowed.discard("Accept")
    return allowed
