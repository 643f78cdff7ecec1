"""The requester console: keys made and revoked in the admin, balances topped up, keys saved."""
from __future__ import annotations

import json
import re

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from tests.marketplace.conftest import run_command

pytestmark = pytest.mark.django_db(transaction=True)


def admin_session(base: str) -> requests.Session:
    get_user_model().objects.create_superuser("boss", password="Boss-pass-9182")
    s = requests.Session()
    s.get(base + "/admin/login/")
    r = s.post(base + "/admin/login/", data={"username": "boss", "password": "Boss-pass-9182",
                                             "csrfmiddlewaretoken": s.cookies["csrftoken"], "next": "/admin/"})
    assert r.status_code == 200 and "Log out" in r.text
    return s


def test_admin_makes_tops_up_and_revokes_keys(market):
    from crowd.marketplace.models import RequesterAccount, RequesterKey

    base = market.base
    s = admin_session(base)
    boss = get_user_model().objects.get(username="boss")
    account = RequesterAccount.objects.create(user=boss)

    page = s.get(base + "/admin/marketplace/requesterkey/add/")
    r = s.post(base + "/admin/marketplace/requesterkey/add/", data={
        "account": account.pk, "csrfmiddlewaretoken": s.cookies["csrftoken"]})
    assert r.status_code == 200, page.text[:300]
    found = re.search(r"AWS_ACCESS_KEY_ID=(\w+)\s+AWS_SECRET_ACCESS_KEY=(\S+)", r.text)
    assert found, r.text[:2000]
    key_id, secret = found[1], found[2]
    mturk = boto3.client("mturk", endpoint_url=market.endpoint, region_name="us-east-1",
                         aws_access_key_id=key_id, aws_secret_access_key=secret,
                         config=Config(retries={"total_max_attempts": 1}))
    assert mturk.get_account_balance()["AvailableBalance"] == "0.00"

    r = s.post(base + f"/admin/marketplace/requesteraccount/{account.pk}/change/", data={
        "user": boss.pk, "top_up": "25.50", "csrfmiddlewaretoken": s.cookies["csrftoken"],
        "ledger-TOTAL_FORMS": "0", "ledger-INITIAL_FORMS": "0", "ledger-MIN_NUM_FORMS": "0",
        "ledger-MAX_NUM_FORMS": "0"})
    assert r.status_code == 200 and "25.50" in r.text
    assert mturk.get_account_balance()["AvailableBalance"] == "25.50"

    key = RequesterKey.objects.get(access_key_id=key_id)
    r = s.post(base + "/admin/marketplace/requesterkey/", data={
        "action": "revoke", "_selected_action": [key.pk], "csrfmiddlewaretoken": s.cookies["csrftoken"]})
    assert r.status_code == 200
    with pytest.raises(ClientError) as err:
        mturk.get_account_balance()
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_create_requester_key_can_save_it_for_launchers(market):
    get_user_model().objects.create_user("admin2", password="x")
    out = run_command("create_requester_key", "admin2", "--save", "--balance", "3")
    saved = json.loads((django_settings.VAR_DIR / "requester-key.json").read_text())
    assert f"AWS_ACCESS_KEY_ID={saved['aws_access_key_id']}" in out
    assert (django_settings.VAR_DIR / "requester-key.json").stat().st_mode & 0o077 == 0
    mturk = boto3.client("mturk", endpoint_url=market.endpoint, region_name=saved["region_name"],
                         aws_access_key_id=saved["aws_access_key_id"],
                         aws_secret_access_key=saved["aws_secret_access_key"])
    assert mturk.get_account_balance()["AvailableBalance"] == "3.00"
