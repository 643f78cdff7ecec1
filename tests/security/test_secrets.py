"""Secrets at rest: API tokens are kept as hashes, requester and provider secret keys encrypted,
passwords hashed. The check reads every row of every table with raw SQL, so no column, cache
table or log row anywhere in the database holds a secret in plain text."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from crowd import services as crowd_services
from datasets.models import Project
from datasets.services.tokens import api_token_check, api_token_create

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


def every_cell() -> list[tuple[str, str]]:
    cells = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                cells.extend((table, str(value)) for value in row if value is not None)
    return cells


def test_no_secret_is_stored_in_plain_text(capsys):
    User = get_user_model()
    owner = User.objects.create_user("owner", password="Owner-password-71!")
    project = Project.objects.create(name="P", owner=owner)
    _, api_token = api_token_create(user=owner, name="script")
    call_command("create_requester_key", "owner", "--balance", "10")
    printed = capsys.readouterr().out
    requester_secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", printed)[1]
    crowd_services.credentials_set(project=project, access_key_id="AKIDPROVIDER0000001",
                                   secret_access_key="provider-secret-Zq81x", endpoint_url="https://mturk.example")
    secrets = {"api token": api_token, "requester secret": requester_secret,
               "provider secret": "provider-secret-Zq81x", "password": "Owner-password-71!"}
    cells = every_cell()
    assert len(cells) > 20  # the scan reads real rows
    for what, secret in secrets.items():
        found = [table for table, text in cells if secret in text]
        assert found == [], f"the {what} is stored in plain text in {found}"
    # ... and yet each still works: hashed, encrypted, not lost.
    assert api_token_check(raw=api_token).user == owner
    assert User.objects.get(pk=owner.pk).check_password("Owner-password-71!")
    from crowd.marketplace import crypto
    from crowd.marketplace.models import RequesterKey

    assert crypto.decrypt(RequesterKey.objects.get().secret_encrypted) == requester_secret
