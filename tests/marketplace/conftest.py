"""Fixtures that drive the marketplace as a third party would: boto3 over HTTP for requesters,
plain HTTP sessions (``requests``) for workers, both against pytest-django's ``live_server``.

Only setup that an operator does by hand goes through management commands (a requester key, a
top-up, an invitation link); everything after that is HTTP.
"""
from __future__ import annotations

import gc
import io
import re
from dataclasses import dataclass, field
from datetime import timedelta

import boto3
import pytest
import requests
from botocore.config import Config
from django.contrib.auth import get_user_model
from django.core.management import call_command

from crowd.marketplace import clock

EXTERNAL_QUESTION = (
    '<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/'
    'ExternalQuestion.xsd"><ExternalURL>{url}</ExternalURL><FrameHeight>600</FrameHeight></ExternalQuestion>'
)


def run_command(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@dataclass
class Requester:
    username: str
    access_key_id: str
    secret: str
    endpoint: str
    opened: list = field(default_factory=list, repr=False)  # the Market's, closed with it

    def client(self, **config):
        client = boto3.client(
            "mturk", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret,
            config=Config(retries={"total_max_attempts": 1}, **config))
        self.opened.append(client)
        return client


@dataclass
class Worker:
    username: str
    session: requests.Session
    base: str
    worker_id: str = ""

    def csrf(self) -> str:
        return self.session.cookies.get("csrftoken", "")

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.base + path, **kw)

    def post(self, path: str, data: dict | None = None, **kw) -> requests.Response:
        headers = {"X-CSRFToken": self.csrf(), "Referer": self.base + "/market/"}
        return self.session.post(self.base + path, data=data or {}, headers=headers, **kw)

    def accept(self, hit_id: str) -> requests.Response:
        return self.post(f"/market/hits/{hit_id}/accept/", allow_redirects=False)

    def accept_assignment_id(self, hit_id: str) -> str:
        response = self.accept(hit_id)
        assert response.status_code == 302, response.text[:500]
        return response.headers["Location"].rstrip("/").split("/")[-1]

    def submit(self, assignment_id: str, **fields) -> requests.Response:
        # The task iframe posts its own form; it carries no CSRF token (the view is csrf_exempt).
        return self.session.post(self.base + "/mturk/externalSubmit", data={"assignmentId": assignment_id, **fields})


@dataclass
class Market:
    base: str
    requesters: dict = field(default_factory=dict)
    counter: int = 0
    opened: list = field(default_factory=list)  # HTTP clients, closed by close()

    @property
    def endpoint(self) -> str:
        return self.base + "/mturk-api/"

    def requester(self, username: str = "req", *, balance: str = "1000", public: bool = False) -> Requester:
        User = get_user_model()
        User.objects.create_user(username=username, password="requester-pass-123")
        args = ["create_requester_key", username, "--balance", balance] + (["--public"] if public else [])
        out = run_command(*args)
        key = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out)[1]
        secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out)[1]
        req = Requester(username, key, secret, self.endpoint, self.opened)
        self.requesters[username] = req
        return req

    def invite(self, requester: str, uses: int = 1) -> str:
        return run_command("create_worker_invite", requester, "--uses", str(uses)).strip().rstrip("/").split("/")[-1]

    def worker(self, username: str | None = None, *, invite_of: str = "req", country: str = "US") -> Worker:
        """Sign up over HTTP with an invitation link, as a new worker would."""
        self.counter += 1
        username = username or f"worker{self.counter}"
        code = self.invite(invite_of)
        session = requests.Session()
        self.opened.append(session)
        w = Worker(username, session, self.base)
        page = w.get(f"/market/join/{code}/")
        assert page.status_code == 200, page.text[:300]
        response = w.post("/market/signup/", {
            "username": username, "email": "", "country": country, "password1": "Sturdy-pass-9271",
            "password2": "Sturdy-pass-9271", "invite_code": code}, allow_redirects=False)
        assert response.status_code == 302, response.text[:2000]
        home = w.get("/market/")
        w.worker_id = re.search(r"Your worker ID is <code>(A[A-Z0-9]{13})</code>", home.text)[1]
        return w

    def question(self, path: str = "/static/task.html") -> str:
        return EXTERNAL_QUESTION.format(url=self.base + path)

    def close(self) -> None:
        """Close the HTTP clients the test opened. An idle keep-alive connection keeps its live
        server thread waiting, and the thread keeps its database connection (``CONN_MAX_AGE``),
        which would still be open when the test database is dropped. Closing a client closes
        the connections in its pool; one still held by a response (kept alive by a traceback's
        frames, as ``pytest.raises`` keeps them) closes when that response is collected."""
        for client in self.opened:
            client.close()
        self.opened.clear()
        gc.collect()


def market_open(live_server, settings) -> "Market":
    """The marketplace on the live server, set for tests: loopback http, no rate limit in the way."""
    settings.MARKETPLACE_ALLOW_HTTP_LOOPBACK = True
    settings.MARKETPLACE_API_RATE = 1000.0
    settings.MARKETPLACE_API_BURST = 1000.0
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from django.core.cache import cache

    cache.clear()
    return Market(base=live_server.url)


@pytest.fixture
def market(live_server, settings):
    m = market_open(live_server, settings)
    yield m
    m.close()


class FrozenClock:
    """Moves the marketplace's business clock (``crowd.marketplace.clock.now``) by hand."""

    def __init__(self, monkeypatch):
        self.offset = timedelta()
        real = clock.now
        monkeypatch.setattr(clock, "now", lambda: real() + self.offset)

    def advance(self, **kwargs) -> None:
        self.offset += timedelta(**kwargs)


@pytest.fixture
def time_machine(monkeypatch):
    return FrozenClock(monkeypatch)


def hit_kwargs(market: Market, **overrides) -> dict:
    params = {
        "Title": "Label the animals", "Description": "Click every animal in the photo.", "Reward": "0.05",
        "AssignmentDurationInSeconds": 600, "LifetimeInSeconds": 3600, "MaxAssignments": 1,
        "AutoApprovalDelayInSeconds": 86400, "Keywords": "image, labeling",
        "Question": market.question(),
    }
    params.update(overrides)
    return params
