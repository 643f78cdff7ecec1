"""``manage.py marketplace_demo OWNER [--worker NAME] [--balance 100] [--keep-key ID]``.

The marketplace's side of a demo, as an operator would set it up: an active, public requester key
for OWNER (reused from ``VAR_DIR/requester-key.json`` while it is active, made and topped up
otherwise) and one worker account in OWNER's crowd. Prints one JSON object; idempotent. It knows
nothing of projects: whoever asked decides what to publish with the key, through the API.
"""
from __future__ import annotations

import json
import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from crowd.marketplace import services
from crowd.marketplace.models import RequesterKey


def _active(*, user, access_key_id: str) -> bool:
    return RequesterKey.objects.filter(access_key_id=access_key_id, is_active=True, account__user=user).exists()


class Command(BaseCommand):
    help = "Make (once) a public requester key for OWNER and a worker account in OWNER's crowd; print JSON."

    def add_arguments(self, parser):
        parser.add_argument("owner")
        parser.add_argument("--worker", default="worker", help="The worker account to make once.")
        parser.add_argument("--balance", type=Decimal, default=Decimal("100"),
                            help="US dollars to start a new key's account with.")
        parser.add_argument("--keep-key", default="", help="An access key id the caller holds: kept while active.")
        parser.add_argument("--endpoint-url", default="", help="Recorded in requester-key.json.")

    def handle(self, *args, owner: str, worker: str, balance: Decimal, keep_key: str, endpoint_url: str, **options):
        User = get_user_model()
        user = User.objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"No user named {owner!r}.")
        account = services.requester_account_for(user=user)
        if not account.is_public:
            account.is_public = True
            account.save(update_fields=["is_public"])

        out: dict = {"owner": owner, "made_key": False}
        path = settings.VAR_DIR / "requester-key.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        if keep_key and _active(user=user, access_key_id=keep_key):
            out.update(aws_access_key_id=keep_key, aws_secret_access_key="")
        elif saved.get("username") == owner and _active(user=user, access_key_id=saved.get("aws_access_key_id", "")):
            out.update(aws_access_key_id=saved["aws_access_key_id"], aws_secret_access_key=saved["aws_secret_access_key"])
        else:
            key, secret = services.requester_key_create(user=user)
            if balance:
                services.account_top_up(account=account, amount=balance, reference="marketplace_demo")
            path.write_text(json.dumps({
                "username": owner, "aws_access_key_id": key.access_key_id, "aws_secret_access_key": secret,
                "endpoint_url": endpoint_url or f"{settings.PUBLIC_BASE_URL}/mturk-api/", "region_name": "us-east-1",
            }, indent=2))
            path.chmod(0o600)
            out.update(aws_access_key_id=key.access_key_id, aws_secret_access_key=secret, made_key=True)

        out.update(worker=worker, worker_password="", worker_password_file="")
        if not User.objects.filter(username=worker).exists():
            password = secrets.token_urlsafe(12)
            invite = services.worker_invite_create(account=account, uses=1)
            services.worker_sign_up(username=worker, password=password, invite_code=invite.code)
            password_file = settings.VAR_DIR / "worker-password.txt"
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            out.update(worker_password=password, worker_password_file=str(password_file))
        self.stdout.write(json.dumps(out))
