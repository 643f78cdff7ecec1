"""``manage.py marketplace_top_up USERNAME AMOUNT``: add US dollars to a requester's balance."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from crowd.marketplace import services


class Command(BaseCommand):
    help = "Add money (USD) to a requester's marketplace balance."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("amount")

    def handle(self, *args, username: str, amount: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise CommandError(f"{amount!r} is not an amount; write it like 25 or 10.50.") from None
        if value <= 0:
            raise CommandError("The amount must be positive.")
        account = services.account_top_up(account=services.requester_account_for(user=user), amount=value,
                                          reference="marketplace_top_up")
        self.stdout.write(f"Balance of {username}: ${account.balance}")
