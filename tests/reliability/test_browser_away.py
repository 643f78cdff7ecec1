"""A worker's browser goes away in the middle of a task, in the marketplace with the real tool.

The tool keeps a draft in the browser's localStorage under the assignment's id: when the same
worker comes back (same browser) while the assignment is still theirs, the work is there again.
When they do not come back in time, the assignment expires and its slot goes back to the pool
for another worker.
"""
from __future__ import annotations

import pytest

from datasets.models import InstancePoint
from frontend.services import task_item_create, task_path
from tests.frontend.conftest import categories, images, project  # noqa: F401 - fixtures
from tests.marketplace.conftest import EXTERNAL_QUESTION, hit_kwargs, market, time_machine  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def spots(frame) -> list[tuple[str, str]]:
    return [(c.get_attribute("cx"), c.get_attribute("cy")) for c in frame.locator("circle.spot").all()]


def open_work(page, base: str, assignment_id: str):
    page.goto(f"{base}/market/work/{assignment_id}/")
    frame = page.frame_locator("iframe.task")
    frame.locator(".viewport").wait_for()
    return frame


def test_the_draft_comes_back_in_time_and_an_abandoned_assignment_returns_to_the_pool(
        market, time_machine, page, project, images, categories):
    mturk = market.requester("req").client()
    market.worker("alice")
    task = task_item_create(kind="spotting", project=project, images=[images[0]], category=categories[4])
    question = EXTERNAL_QUESTION.format(url=market.base + task_path(task=task))
    hit_id = mturk.create_hit(**hit_kwargs(market, Question=question, AssignmentDurationInSeconds=600))["HIT"]["HITId"]

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(market.base + "/market/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "Sturdy-pass-9271")
    page.click("button.primary")
    page.goto(f"{market.base}/market/hits/{hit_id}/preview/")
    page.click("button:has-text('Accept')")
    assert "/market/work/" in page.url
    assignment_id = page.url.rstrip("/").split("/")[-1]
    frame = page.frame_locator("iframe.task")
    viewport = frame.locator(".viewport")
    viewport.wait_for()
    box = viewport.bounding_box()
    for fx, fy in [(0.3, 0.3), (0.5, 0.55), (0.7, 0.4)]:
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    drawn = spots(frame)
    assert len(drawn) == 3

    # The browser tab goes away mid-task (nothing was submitted)...
    context = page.context
    page.close()
    assert not InstancePoint.objects.filter(made_by__startswith="A").exists()
    # ...and the same worker comes back five minutes later, within the assignment's ten.
    time_machine.advance(seconds=300)
    page = context.new_page()
    frame = open_work(page, market.base, assignment_id)
    assert spots(frame) == drawn
    page.close()

    # This time they do not come back in time: the assignment expires...
    time_machine.advance(seconds=301)
    page = context.new_page()
    late = page.goto(f"{market.base}/market/work/{assignment_id}/")
    assert late.status == 410 and "nothing more to do" in page.content()
    # ...and its slot is back in the pool: another worker takes it and starts from nothing.
    assert mturk.get_hit(HITId=hit_id)["HIT"]["NumberOfAssignmentsAvailable"] == 1
    bob = market.worker("bob")
    bobs = bob.accept_assignment_id(hit_id)
    assert bobs != assignment_id
    context.clear_cookies()  # bob signs in on the same browser, where alice's draft is still kept
    page.goto(market.base + "/market/login/")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", "Sturdy-pass-9271")
    page.click("button.primary")
    frame = open_work(page, market.base, bobs)
    assert spots(frame) == []  # alice's draft belongs to alice's assignment, not to the HIT
