"""What a crowd provider must do for us, in our words.

The concepts follow the usual split of crowd platforms (Mephisto's CrowdProvider has the same
four): a *requester* is the paying account (our ``ProviderCredentials``); a *worker* is a person
known by the provider's id; a *unit* is one slot of work a worker can take, which on MTurk is a
HIT with ``MaxAssignments`` slots; an *agent* is a worker holding a unit, which on MTurk is an
assignment. Every method is one request to the provider; services decide what to call when.

Errors: ``TransientProviderError`` (throttled, 5xx, timeouts: try again later, the same call is
safe to repeat because every paying or creating call carries a token), ``ProviderError`` for
everything the provider refused (with ``code`` as it named it), and ``AlreadyExists`` when a
token was used before (the provider did it already; ``existing_id`` names the thing, if known).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterator


class ProviderError(Exception):
    """The provider refused the request. ``code`` is its error code (e.g. TurkErrorCode)."""

    def __init__(self, message: str, *, code: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation


class TransientProviderError(ProviderError):
    """Throttled, a 5xx or a lost connection after the client's own retries: retry later."""


class AlreadyExists(ProviderError):
    """The UniqueRequestToken (or name) was used before: the work was done by an earlier call."""

    def __init__(self, message: str, *, existing_id: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.existing_id = existing_id


class NotFound(ProviderError):
    """The provider does not know the thing asked for (a HIT, an assignment)."""


class InvalidState(ProviderError):
    """The thing exists but is not in a state that allows the request (already approved...)."""


@dataclass
class Requirement:
    qualification_type_id: str
    comparator: str
    integer_values: list[int] = field(default_factory=list)
    locale_values: list[dict[str, str]] = field(default_factory=list)


@dataclass
class UnitType:
    """What every unit of a stage shares (MTurk: a HIT type)."""

    title: str
    description: str
    keywords: str
    reward: Decimal
    assignment_duration_s: int
    auto_approval_delay_s: int
    requirements: list[Requirement] = field(default_factory=list)


@dataclass
class Unit:
    """A unit as the provider reports it (MTurk: a HIT)."""

    id: str
    type_id: str
    status: str
    max_assignments: int
    annotation: str = ""
    expiration: datetime | None = None
    pending: int = 0
    available: int = 0
    completed: int = 0


@dataclass
class Agent:
    """A worker's work on a unit as the provider reports it (MTurk: an assignment)."""

    id: str
    worker_id: str
    unit_id: str
    status: str  # Submitted | Approved | Rejected
    answer_xml: str = ""
    submitted_at: datetime | None = None
    feedback: str = ""


class CrowdProvider(abc.ABC):
    """The operations the crowd services need from a marketplace."""

    name = "provider"

    # --- requester ---
    @abc.abstractmethod
    def balance(self) -> Decimal: ...

    # --- units ---
    @abc.abstractmethod
    def unit_type_register(self, unit_type: UnitType) -> str:
        """Return the id of the unit type with these properties (the same properties, same id)."""

    @abc.abstractmethod
    def unit_create(
        self, *, type_id: str, question: str, max_assignments: int, lifetime_s: int, annotation: str, token: str
    ) -> Unit: ...

    @abc.abstractmethod
    def unit_get(self, unit_id: str) -> Unit: ...

    @abc.abstractmethod
    def units_reviewable(self, *, type_id: str) -> Iterator[Unit]: ...

    @abc.abstractmethod
    def units_all(self) -> Iterator[Unit]:
        """Every unit of the requester (costly: only to find one whose creation answer was lost)."""

    @abc.abstractmethod
    def unit_set_expiration(self, unit_id: str, expire_at: datetime) -> None: ...

    @abc.abstractmethod
    def unit_delete(self, unit_id: str) -> None: ...

    @abc.abstractmethod
    def unit_add_assignments(self, unit_id: str, number: int, *, token: str) -> None:
        """Let ``number`` more workers take the unit (MTurk: CreateAdditionalAssignmentsForHIT).
        A token used before raises ``AlreadyExists``: the unit was extended by that earlier call."""

    # --- agents ---
    @abc.abstractmethod
    def agents_for_unit(self, unit_id: str) -> Iterator[Agent]:
        """Every submitted, approved or rejected agent of a unit (never ones still working)."""

    @abc.abstractmethod
    def agent_get(self, agent_id: str) -> tuple[Agent, Unit]: ...

    @abc.abstractmethod
    def agent_approve(self, agent_id: str, feedback: str) -> None: ...

    @abc.abstractmethod
    def agent_reject(self, agent_id: str, feedback: str) -> None: ...

    # --- workers ---
    @abc.abstractmethod
    def worker_bonus(self, *, worker_id: str, agent_id: str, amount: Decimal, reason: str, token: str) -> None: ...

    @abc.abstractmethod
    def worker_bonuses_for(self, agent_id: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def worker_block(self, worker_id: str, reason: str) -> None: ...

    @abc.abstractmethod
    def workers_notify(self, worker_ids: list[str], subject: str, text: str) -> dict[str, str]:
        """Send a message; returns {worker id: failure message} for those it could not reach."""

    @abc.abstractmethod
    def qualification_type_create(self, *, name: str, description: str) -> str: ...

    @abc.abstractmethod
    def qualification_grant(self, *, qualification_type_id: str, worker_id: str, value: int) -> None: ...
