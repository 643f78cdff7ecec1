"""``manage.py create_requester_key USERNAME [--save] [--balance 100]``: a requester key pair."""
from __future__ import annotations

import json
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from crowd.marketplace import services


class Command(BaseCommand):
    help = "Make an access key pair for a requester (the user is made a requester if needed) and print it."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--save", action="store_true",
                            help="Also write the key to VAR_DIR/requester-key.json (mode 600) for launchers.")
        parser.add_argument("--balance", type=Decimal, default=None,
                            help="Top the requester's balance up by this many US dollars.")
        parser.add_argument("--public", action="store_true", help="Show this requester's HITs to every worker.")

    def handle(self, *args, username: str, save: bool, balance, public: bool, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}. Create it first (manage.py createsuperuser).")
        key, secret = services.requester_key_create(user=user)
        account = key.account
        if public and not account.is_public:
            account.is_public = True
            account.save(update_fields=["is_public"])
        if balance:
            account = services.account_top_up(account=account, amount=balance, reference="create_requester_key")
        self.stdout.write(f"AWS_ACCESS_KEY_ID={key.access_key_id}")
        self.stdout.write(f"AWS_SECRET_ACCESS_KEY={secret}")
        if save:
            path = settings.VAR_DIR / "requester-key.json"
            path.write_text(json.dumps({
                "username": username, "aws_access_key_id": key.access_key_id, "aws_secret_access_key": secret,
                "endpoint_url": f"{settings.PUBLIC_BASE_URL}/mturk-api/", "region_name": "us-east-1"}, indent=2))
            path.chmod(0o600)
            self.stderr.write(f"Saved to {path}")
