"""A worker does a HIT in a real browser: the task runs in the sandboxed iframe and posts its form
to {turkSubmitTo}/mturk/externalSubmit, as a task hosted anywhere would."""
from __future__ import annotations

import pytest

from tests.marketplace.conftest import hit_kwargs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

TASK = """<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd">
<HTMLContent><![CDATA[<!doctype html><html><body>
<form id="f" method="post"><input name="label" id="label" value="">
<input type="hidden" name="assignmentId" id="aid"><button id="go">Submit</button></form>
<script>
  const q = new URLSearchParams(location.search);
  document.getElementById("aid").value = q.get("assignmentId");
  document.getElementById("f").action = (q.get("turkSubmitTo") || "") + "/mturk/externalSubmit";
</script></body></html>]]></HTMLContent><FrameHeight>300</FrameHeight></HTMLQuestion>"""


def test_a_worker_does_a_hit_in_the_browser(market, page):
    mturk = market.requester("req").client()
    market.worker("alice")
    hit_id = mturk.create_hit(**hit_kwargs(market, Question=TASK))["HIT"]["HITId"]

    page.goto(market.base + "/market/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "Sturdy-pass-9271")
    page.click("button.primary")
    page.click("text=Preview")
    page.click("button:has-text('Accept')")
    assert "/market/work/" in page.url
    task = page.frame_locator("iframe.task")
    task.locator("#label").fill("a <b>bold</b> zebra")
    task.locator("#go").click()
    # The sandboxed task posts cross-site, without the session cookie: the marketplace answers with
    # a confirmation from its own origin, whose button posts again with the session.
    confirm = task.locator("button:has-text('Submit my work')")
    try:
        confirm.wait_for(timeout=5000)
        confirm.click()
    except Exception:
        pass  # the browser sent the cookie anyway: submitted straight away
    page.wait_for_url(market.base + "/market/", timeout=15000)

    listed = mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"]
    assert len(listed) == 1 and listed[0]["AssignmentStatus"] == "Submitted"
    assert "a &lt;b&gt;bold&lt;/b&gt; zebra" in listed[0]["Answer"]
    page.goto(market.base + "/market/dashboard/")
    assert page.locator("td.status").first.inner_text() == "Submitted"
