"""A simulated worker's browser, over plain HTTP (``requests``) against a running Annotator.

It does what a person does on our marketplace: signs up with an invitation link, accepts the next
HIT of a group, opens the work page, loads the framed task page and its images, posts the answer
to our server, and submits the HIT's form to ``/mturk/externalSubmit``. Only loopback addresses
are accepted, so a simulation can never send traffic anywhere else.

A 429 (rate limit) or 503 (a service restarting) is waited out as its ``Retry-After`` says.
"""
from __future__ import annotations

import html
import ipaddress
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

TASK_DATA = re.compile(r'<script id="task-data" type="application/json">(.*?)</script>', re.S)
FRAME = re.compile(r'<iframe class="task" src="([^"]+)"')
WORKER_ID = re.compile(r"Your worker ID is <code>(A[A-Z0-9]{13})</code>")
PASSWORD = "Simulated-worker-pass-4821"


class ClientError(RuntimeError):
    pass


def check_loopback(base: str) -> None:
    host = urlsplit(base).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ClientError(f"cannot resolve {host!r}: {exc}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ClientError(f"simulated workers only talk to loopback addresses, not {base}")


@dataclass
class Task:
    assignment_id: str
    hit_id: str
    url: str  # the task page as the marketplace frames it (with assignmentId, workerId...)
    answer_url: str
    data: dict[str, Any]


class MarketWorker:
    def __init__(self, base: str, username: str) -> None:
        check_loopback(base)
        self.base = base.rstrip("/")
        self.username = username
        self.session = requests.Session()
        self.worker_id = ""
        self.requests = 0

    # --- plumbing ---
    def _send(self, method: str, url: str, **kw) -> requests.Response:
        if not url.startswith("http"):
            url = self.base + url
        for _ in range(20):
            self.requests += 1
            response = self.session.request(method, url, timeout=60, **kw)
            if response.status_code not in (429, 503):
                return response
            time.sleep(min(float(response.headers.get("Retry-After") or 1), 10))
        raise ClientError(f"{method} {url} kept answering {response.status_code}")

    def _post_form(self, path: str, data: dict) -> requests.Response:
        token = self.session.cookies.get("csrftoken", "")
        return self._send("POST", path, data={**data, "csrfmiddlewaretoken": token}, allow_redirects=False,
                          headers={"X-CSRFToken": token, "Referer": self.base + "/market/"})

    # --- the worker's steps ---
    def sign_up(self, invite_code: str) -> str:
        page = self._send("GET", f"/market/join/{invite_code}/")
        if page.status_code != 200:
            raise ClientError(f"the invitation page answered {page.status_code}")
        reply = self._post_form("/market/signup/", {
            "username": self.username, "email": "", "country": "US", "password1": PASSWORD,
            "password2": PASSWORD, "invite_code": invite_code})
        if reply.status_code != 302:
            raise ClientError(f"sign-up of {self.username} answered {reply.status_code}: {reply.text[:300]}")
        found = WORKER_ID.search(self._send("GET", "/market/").text)
        if not found:
            raise ClientError("the marketplace's home page shows no worker id after sign-up")
        self.worker_id = found[1]
        return self.worker_id

    def take(self, hit_type_id: str) -> Task | None:
        """Accept the next HIT of a group; None when the group has nothing this worker may take."""
        reply = self._post_form(f"/market/groups/{hit_type_id}/accept/", {})
        if reply.status_code != 302:
            return None
        work = self._send("GET", reply.headers["Location"])
        found = FRAME.search(work.text)
        if work.status_code != 200 or not found:
            raise ClientError(f"the work page answered {work.status_code} without a task frame")
        src = html.unescape(found[1])
        page = self._send("GET", src)
        data_found = TASK_DATA.search(page.text)
        if page.status_code != 200 or not data_found:
            raise ClientError(f"the task page answered {page.status_code} without its data")
        data = json.loads(html.unescape(data_found[1]))
        for url in _image_urls(data):
            image = self._send("GET", url)
            if image.status_code != 200:
                raise ClientError(f"the task's image {url} answered {image.status_code}")
        query = dict(p.split("=", 1) for p in urlsplit(src).query.split("&") if "=" in p)
        path = urlsplit(src).path
        return Task(assignment_id=query["assignmentId"], hit_id=query.get("hitId", ""), url=src,
                    answer_url=self.base + path + "answer", data=data)

    def answer(self, task: Task, body: dict[str, Any]) -> dict[str, Any]:
        """Post the answer to our server, then the HIT's form to the marketplace."""
        reply = self._send("POST", task.answer_url, json={
            "host": {"assignmentId": task.assignment_id, "workerId": self.worker_id, "hitId": task.hit_id},
            "answer": body})
        if reply.status_code not in (200, 201):
            raise ClientError(f"the answer was refused ({reply.status_code}): {reply.text[:300]}")
        stored = reply.json()
        done = self._send("POST", "/mturk/externalSubmit", data={
            "assignmentId": task.assignment_id, "answerId": str(stored["answer"]),
            "summary": stored.get("summary", "")})
        if done.status_code != 200:
            raise ClientError(f"submitting the HIT answered {done.status_code}")
        return stored


def _image_urls(data: dict[str, Any]) -> list[str]:
    found = []
    for image in data.get("images", []):
        found.append(image["url"])
    if isinstance(data.get("image"), dict):
        found.append(data["image"]["url"])
    for entry in data.get("polygons", []) + data.get("items", []):
        found.append(entry["image"]["url"])
    return list(dict.fromkeys(found))
