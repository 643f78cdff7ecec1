"""Rewards, bonuses and the marketplace commission, MTurk's way.

Commission is 20% of the reward or bonus, 40% for HITs with 10 or more assignments, and at least
$0.01 per assignment or bonus. Amounts are strings like "0.05" on the wire.
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from crowd.marketplace import errors

CENT = Decimal("0.01")
_AMOUNT = re.compile(r"^\d{1,7}(\.\d{1,2})?$")


def parse_amount(value: str, *, field: str, minimum: Decimal = CENT) -> Decimal:
    """A USD amount like "5" or "101.42" (no currency symbol, at most two decimals)."""
    if not isinstance(value, str) or not _AMOUNT.match(value.strip()):
        raise errors.RequestError(
            f"{field} {value!r} is not a valid amount: use a US dollar amount like \"0.05\" "
            f"(digits, at most two decimal places, no currency symbol). {errors._stamp()}",
            "AWS.ParameterOutOfRange",
        )
    amount = Decimal(value.strip()).quantize(CENT)
    if amount < minimum:
        raise errors.parameter(f"{field} must be at least ${minimum}, was ${amount}.")
    return amount


def format_amount(amount: Decimal) -> str:
    return str(amount.quantize(CENT))


def commission(amount: Decimal, *, max_assignments: int = 1) -> Decimal:
    rate = Decimal("0.40") if max_assignments >= 10 else Decimal("0.20")
    fee = (amount * rate).quantize(CENT, rounding=ROUND_HALF_UP)
    return max(fee, CENT)


def cost_per_assignment(reward: Decimal, max_assignments: int) -> Decimal:
    return reward + commission(reward, max_assignments=max_assignments)
