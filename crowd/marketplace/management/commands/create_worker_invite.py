"""``manage.py create_worker_invite USERNAME [--uses N]``: an invitation link to a requester's crowd."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from crowd.marketplace import services


class Command(BaseCommand):
    help = "Make an invitation link that lets workers join a requester's crowd."

    def add_arguments(self, parser):
        parser.add_argument("username", help="The requester.")
        parser.add_argument("--uses", type=int, default=1)

    def handle(self, *args, username: str, uses: int, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        invite = services.worker_invite_create(account=services.requester_account_for(user=user), uses=uses)
        self.stdout.write(f"{settings.PUBLIC_BASE_URL}/market/join/{invite.code}/")
