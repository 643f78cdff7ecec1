"""What the requester sees of a pipeline: the admin's pipeline page (progress and cost per stage),
worker quality with its evidence, the review queue with the outlines drawn, its buttons, and
``manage.py pipeline``. The pipeline is driven as in test_pipeline.py: real HITs on the fake MTurk
server, answers through the tools' own answer service, and the crowd sync to review and pay.
"""
from __future__ import annotations

import re
from decimal import Decimal
from io import BytesIO, StringIO
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.test import Client
from django.urls import reverse

from crowd import selectors, services, tasks
from crowd.models import HIT, Assignment, CrowdStage, Payment, PipelineItem, Worker
from crowd.pipeline import engine
from crowd.pipeline.chain import pipeline_configure
from datasets.models import Category, Polygon
from frontend.models import TaskItem
from frontend.services import answer_submit
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project  # noqa: F401

pytestmark = pytest.mark.django_db

BOX = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]
WIDER = [8.0, 8.0, 34.0, 8.0, 34.0, 33.0, 8.0, 33.0]
HOSTILE = '<img src=x onerror="alert(1)">'


def answer(fake, hit: HIT, worker: str, body: dict) -> str:
    """A worker accepts at the marketplace, the tool stores the answer, the marketplace hears of
    the submission (so the sync can pay it), and the pipeline decides."""
    aid = fake.service.accept(hit.provider_hit_id, worker)
    task = TaskItem.objects.get(pk=hit.task_ref)
    answer_submit(task=task, worker_id=worker, assignment_id=aid, hit_id=hit.provider_hit_id,
                  answer={"schema": f"annotator.answer/{task.kind}", "version": 1, **body})
    fake.service.submit(aid, {"answer": "{}"})
    engine.items_advance(hit_id=hit.pk)
    return aid


def hits_of(stage: CrowdStage) -> list[HIT]:
    return list(HIT.objects.filter(stage=stage).exclude(status=HIT.Status.CANCELLED).order_by("id"))


def reject_twice(fake, seg: CrowdStage, ver: CrowdStage, point_id: int) -> None:
    """Outline the instance, have verification reject it, redraw, reject again: K=1 is spent."""
    answer(fake, PipelineItem.objects.get(stage=seg, point_id=point_id, attempt=1).hit, "s1",
           {"point": point_id, "parts": [BOX]})
    for attempt in (1, 2):
        vhit = PipelineItem.objects.get(stage=ver, point_id=point_id, attempt=attempt).hit
        for worker in ("v1", "v2", "v3"):
            answer(fake, vhit, worker, {"decisions": [{"polygon": vhit.items[0], "accept": worker == "v3"}]})
        if attempt == 1:
            answer(fake, PipelineItem.objects.get(stage=seg, point_id=point_id, attempt=2).hit, "s2",
                   {"point": point_id, "parts": [WIDER]})


@pytest.fixture(autouse=True)
def fresh_estimates():
    """Worker estimates are cached per stage id, and ids come round again after a rollback."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(client, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.org", "pw-for-tests-1234")
    client.force_login(boss)
    return client


@pytest.fixture
def running(fake_mturk, make_project, make_images):
    """A pipeline part-way: categories done and paid, spotting done and paid, two outlines in the
    review queue (each rejected twice), one instance still being outlined."""
    fake = fake_mturk
    project = make_project(budget="20.00")
    images = make_images(project, 3)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    fork = Category.objects.create(project=project, coco_id=48, name="fork")
    cats, spot, seg, ver = pipeline_configure(project=project, overrides={
        "categories": {"max_assignments": 3, "items_per_hit": 2},
        "spotting": {"max_assignments": 2},
        "segmentation": {"require_training": False},
        "verification": {"max_assignments": 3, "items_per_hit": 1, "max_retries": 1},
    })
    engine.pipeline_launch(project_id=project.pk)
    truth = {images[0].pk: [cup.pk], images[1].pk: [cup.pk, fork.pk], images[2].pk: []}
    for hit in hits_of(cats):
        for worker in ("w1", "w2", "w3"):
            marks = {i: [c for c in truth[i] if worker != "w3" or c != fork.pk] for i in hit.items}
            answer(fake, hit, worker, {"images": [{"image": i, "present": marks[i]} for i in hit.items]})
    for hit in hits_of(spot):
        image, category = hit.items[0]
        for worker, dx in (("w1", 0), ("w2", 1)):
            answer(fake, hit, worker, {"image": image, "category": category,
                                       "points": [{"x": 20 + dx, "y": 20}], "crowd": False})
    services.stage_sync(stage_id=cats.pk)
    services.stage_sync(stage_id=spot.pk)
    points = sorted(PipelineItem.objects.filter(stage=seg).values_list("point_id", flat=True))
    for point_id in points[:2]:
        reject_twice(fake, seg, ver, point_id)
    Worker.objects.filter(provider_worker_id="w1").update(gold_seen=4, gold_correct=3)
    return {"fake": fake, "project": project, "stages": (cats, spot, seg, ver), "cup": cup, "fork": fork,
            "points": points}


def cell(html: str, kind: str, name: str) -> str:
    row = re.search(rf'<tr data-stage="{kind}">(.*?)</tr>', html, re.S).group(1)
    return re.search(rf'data-count="{name}">([^<]*)<', row).group(1).strip()


def worker_cell(html: str, worker: str, name: str) -> str:
    row = re.search(rf'<tr data-worker="{worker}">(.*?)</tr>', html, re.S).group(1)
    return re.sub(r"<[^>]+>", "", re.search(rf'data-col="{name}">(.*?)</td>', row, re.S).group(1)).strip()


# --- The progress page -----------------------------------------------------------------------------

def test_the_progress_page_counts_items_money_and_answers_as_the_database_does(staff, running):
    project = running["project"]
    cats, spot, seg, ver = running["stages"]
    html = staff.get(reverse("admin:crowd_pipeline", args=[project.pk])).content.decode()

    for stage in (cats, spot, seg, ver):
        items = PipelineItem.objects.filter(stage=stage)
        expected = {"waiting": items.filter(state="waiting").count(),
                    "in_progress": items.filter(state="active").count(),
                    "done": items.filter(state__in=["done", "reviewed"]).count(),
                    "rejected_back": items.filter(state="rejected").count(),
                    "review": items.filter(state="review").count(),
                    "assignments": Assignment.objects.filter(hit__stage=stage).exclude(state="invalid").count()}
        assert {k: int(cell(html, stage.kind, k)) for k in expected} == expected, stage.kind
    # The states the fixture made, as a requester would read them off the page.
    assert cell(html, "categories", "done") == "3" and cell(html, "spotting", "done") == "3"
    assert cell(html, "segmentation", "in_progress") == "1"
    assert cell(html, "verification", "rejected_back") == "2" and cell(html, "verification", "review") == "2"
    assert cell(html, "categories", "answers_per_item") == "3.00"  # fixed redundancy: 3 answers per image

    paid = Payment.objects.filter(project=project, status="paid")
    assert paid.exists()
    spent = sum((p.amount + p.commission for p in paid), Decimal("0"))
    assert f"<strong>${spent}</strong> spent of a <strong>$20.00</strong> budget" in html
    cats_spent = sum((p.amount + p.commission for p in paid.filter(assignment__hit__stage=cats)), Decimal("0"))
    assert cell(html, "categories", "spent") == str(cats_spent)
    assert f"${selectors.project_costs(project.pk)['reserved'].quantize(Decimal('0.01'))} reserved" in html
    # The progress bar of segmentation: 3 instances, 2 of them redrawn once, so 5 items; one of
    # them is still being outlined.
    assert PipelineItem.objects.filter(stage=seg).count() == 5
    seg_row = re.search(r'<tr data-stage="segmentation">(.*?)</tr>', html, re.S).group(1)
    assert 'class="seg-in_progress" style="width: 20.00%' in seg_row
    assert 'class="seg-done" style="width: 80.00%' in seg_row
    assert "4 of 5 decided" in seg_row
    assert "Estimate: about $" in html and "fixed: 3 per item" in html


def test_the_estimate_is_spent_per_finished_item_times_items_left(staff, running):
    project = running["project"]
    cats, spot, seg, ver = running["stages"]
    # Pay the segmentation work done so far: 4 outlines drawn, 1 instance still to outline.
    services.stage_sync(stage_id=seg.pk)
    rows, money = selectors.pipeline_overview(project)
    row = next(r for r in rows if r["stage"].pk == seg.pk)
    spent = row["spent"]
    assert spent > 0  # the synced outlines were paid
    finished = PipelineItem.objects.filter(stage=seg).exclude(state__in=["waiting", "active"]).count()
    left = PipelineItem.objects.filter(stage=seg, state__in=["waiting", "active"]).count()
    assert (finished, left) == (4, 1)
    assert row["projected"] == (spent / finished * left).quantize(Decimal("0.01"))
    html = staff.get(reverse("admin:crowd_pipeline", args=[project.pk])).content.decode()
    assert f"≈ ${row['projected']} for 1 item<" in html
    # A stage with nothing left costs nothing more; the total adds what each stage still needs.
    assert next(r for r in rows if r["stage"].pk == cats.pk)["projected"] == Decimal("0.00")
    known = sum((r["projected"] for r in rows if r["projected"] is not None), Decimal("0"))
    assert money["projected"] == money["spent"] + known


def test_an_adaptive_pipeline_says_so_and_counts_answers_per_item(staff, fake_mturk, make_project, make_images):
    project = make_project()
    images = make_images(project, 2)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    (cats,) = pipeline_configure(project=project, preset="classification", adaptive=True,
                                 overrides={"categories": {"max_assignments": 8, "items_per_hit": 2,
                                                           "min_answers": 2, "confidence": 0.95}})
    engine.pipeline_launch(project_id=project.pk)
    hit = hits_of(cats)[0]
    for worker in ("w1", "w2"):
        answer(fake_mturk, hit, worker, {"images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
    assert PipelineItem.objects.filter(stage=cats, state="done").count() == len(images)
    html = staff.get(reverse("admin:crowd_pipeline", args=[project.pk])).content.decode()
    assert "adaptive: at least 2, stop when 95% sure, at most 8" in html
    assert cell(html, "categories", "answers_per_item") == "2.00"


def test_a_project_without_a_pipeline_offers_to_configure_one(staff, make_project, make_images):
    project = make_project()
    make_images(project, 2)
    page = staff.get(reverse("admin:crowd_pipeline", args=[project.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and "Configure the COCO pipeline" in html
    assert "2 images and 0 categories" in html and "import categories" in html
    for preset in ("coco", "classification", "known-categories", "no-verification"):
        assert f'value="{preset}"' in html
    assert 'name="adaptive"' in html and 'name="csrfmiddlewaretoken"' in html

    done = staff.post(reverse("admin:crowd_pipeline_configure", args=[project.pk]),
                      {"preset": "no-verification", "adaptive": "on"}, follow=True)
    assert "Pipeline configured: Category labeling → Instance spotting → Segmentation" in done.content.decode()
    stages = list(CrowdStage.objects.filter(project=project).order_by("id"))
    assert [s.kind for s in stages] == ["categories", "spotting", "segmentation"]
    assert stages[0].adaptive and stages[0].feeds == stages[1] and stages[2].feeds is None
    assert 'data-stage="segmentation"' in done.content.decode()


def test_launch_queues_the_task_and_the_task_puts_the_entry_stage_up(staff, fake_mturk, make_project, make_images):
    project = make_project()
    make_images(project, 3)
    Category.objects.create(project=project, coco_id=47, name="cup")
    (cats,) = pipeline_configure(project=project, preset="classification",
                                 overrides={"categories": {"max_assignments": 2, "items_per_hit": 2}})
    queued = []
    with mock.patch.object(tasks.pipeline_launch, "delay_on_commit", side_effect=queued.append):
        page = staff.post(reverse("admin:crowd_pipeline_launch", args=[project.pk]), follow=True)
    assert queued == [project.pk] and "Launch queued" in page.content.decode()
    assert not PipelineItem.objects.exists() and fake_mturk.service.calls["CreateHITWithHITType"] == 0

    tasks.pipeline_launch.run(project.pk)  # what the worker then runs
    assert PipelineItem.objects.filter(stage=cats, state="active").count() == 3
    assert len(fake_mturk.service.state.hits) == 2
    html = staff.get(reverse("admin:crowd_pipeline", args=[project.pk])).content.decode()
    assert cell(html, "categories", "in_progress") == "3" and "Launch again (new images)" in html


def test_catch_up_now_moves_on_what_the_answers_allow(staff, fake_mturk, make_project, make_images):
    project = make_project()
    make_images(project, 2)
    cup = Category.objects.create(project=project, coco_id=47, name="cup")
    (cats,) = pipeline_configure(project=project, preset="classification",
                                 overrides={"categories": {"max_assignments": 1, "items_per_hit": 2}})
    engine.pipeline_launch(project_id=project.pk)
    hit = hits_of(cats)[0]
    aid = fake_mturk.service.accept(hit.provider_hit_id, "w1")
    # The answer is stored but its Celery message was lost: nothing moved on.
    answer_submit(task=TaskItem.objects.get(pk=hit.task_ref), worker_id="w1", assignment_id=aid,
                  hit_id=hit.provider_hit_id, answer={"schema": "annotator.answer/categories", "version": 1,
                                                      "images": [{"image": i, "present": [cup.pk]} for i in hit.items]})
    assert PipelineItem.objects.filter(state="done").count() == 0
    page = staff.post(reverse("admin:crowd_pipeline_catch_up", args=[project.pk]), follow=True)
    assert "Caught up: 2 items moved on" in page.content.decode()
    assert PipelineItem.objects.filter(stage=cats, state="done").count() == 2


def test_items_the_budget_cannot_cover_show_as_waiting(staff, fake_mturk, make_project, make_images):
    project = make_project(budget="0.20")
    make_images(project, 4)
    Category.objects.create(project=project, coco_id=47, name="cup")
    (cats,) = pipeline_configure(project=project, preset="classification",
                                 overrides={"categories": {"max_assignments": 2, "items_per_hit": 1}})
    engine.pipeline_launch(project_id=project.pk)
    waiting = PipelineItem.objects.filter(stage=cats, state="waiting").count()
    active = PipelineItem.objects.filter(stage=cats, state="active").count()
    assert waiting and active and waiting + active == 4
    html = staff.get(reverse("admin:crowd_pipeline", args=[project.pk])).content.decode()
    assert (cell(html, "categories", "waiting"), cell(html, "categories", "in_progress")) == (str(waiting), str(active))
    row = re.search(r'<tr data-stage="categories">(.*?)</tr>', html, re.S).group(1)
    assert f'class="seg-waiting" style="width: {100 * waiting / 4:.2f}%' in row
    assert "no basis yet" in row  # nothing paid, nothing finished: no estimate


# --- Workers ------------------------------------------------------------------------------------------

def test_workers_show_answers_reviews_gold_and_agreement_and_sort(staff, running):
    project = running["project"]
    url = reverse("admin:crowd_pipeline_workers", args=[project.pk])
    html = staff.get(url).content.decode()
    w1 = Worker.objects.get(provider_worker_id="w1")
    mine = Assignment.objects.filter(hit__project=project, worker=w1)
    assert worker_cell(html, "w1", "approved") == str(mine.filter(state="approved").count())
    assert worker_cell(html, "w1", "rejected") == str(mine.filter(state="rejected").count())
    assert worker_cell(html, "w1", "answers") == "5"  # 2 category HITs and 3 spotting HITs
    assert worker_cell(html, "w1", "gold") == "3 of 4" and worker_cell(html, "w1", "gold_accuracy") == "75%"
    assert worker_cell(html, "v1", "answers") == "4"  # 2 outlines x 2 attempts
    # Agreement: w3 missed every fork the others saw, so its sensitivity is the lowest.
    skills, _ = engine.category_skills(running["stages"][0])
    assert worker_cell(html, "w3", "sensitivity").rstrip("*") == f"{skills['w3'].sensitivity:.2f}"
    assert skills["w3"].sensitivity < skills["w1"].sensitivity
    # A worker not yet synced (the verifiers' HITs were not) is listed, without a block button.
    assert "not synced yet" in re.search(r'<tr data-worker="v1">(.*?)</tr>', html, re.S).group(1)

    by_answers = staff.get(url + "?o=-answers").content.decode()
    order = re.findall(r'<tr data-worker="([^"]+)"', by_answers)
    counts = [int(worker_cell(by_answers, w, "answers")) for w in order]
    assert counts == sorted(counts, reverse=True) and order[0] == "w1"
    by_sensitivity = re.findall(r'<tr data-worker="([^"]+)"', staff.get(url + "?o=sensitivity").content.decode())
    assert by_sensitivity[0] == "w3"


def test_block_from_the_workers_page_goes_through_the_worker_admin_action(staff, running):
    project = running["project"]
    w3 = Worker.objects.get(provider_worker_id="w3")
    html = staff.get(reverse("admin:crowd_pipeline_workers", args=[project.pk])).content.decode()
    row = re.search(r'<tr data-worker="w3">(.*?)</tr>', html, re.S).group(1)
    assert f'name="_selected_action" value="{w3.pk}"' in row and 'value="block"' in row
    changelist = reverse("admin:crowd_worker_changelist")
    ask = staff.post(changelist, {"action": "block", "_selected_action": [w3.pk]})
    assert b"reason" in ask.content
    staff.post(changelist, {"action": "block", "_selected_action": [w3.pk], "apply": "1", "reason": "Misses forks."})
    w3.refresh_from_db()
    assert w3.blocked and running["fake"].service.state.blocks
    html = staff.get(reverse("admin:crowd_pipeline_workers", args=[project.pk])).content.decode()
    assert worker_cell(html, "w3", "blocked") == "blocked"


# --- The review queue -----------------------------------------------------------------------------

def test_the_review_queue_draws_every_attempt_and_resolves(staff, running):
    project = running["project"]
    queued = list(PipelineItem.objects.filter(project=project, state="review").order_by("id"))
    assert len(queued) == 2
    url = reverse("admin:crowd_pipeline_review", args=[project.pk])
    html = staff.get(url).content.decode()
    for item in queued:
        card = re.search(rf'<div class="review-card" id="item-{item.pk}">(.*?)</form>', html, re.S).group(1)
        attempts = list(Polygon.objects.filter(point_id=item.point_id).order_by("id"))
        assert len(attempts) == 2 and attempts[-1].pk == item.polygon_id
        drawn = re.findall(r'<polygon points="([^"]+)"[^>]*data-polygon="(\d+)"', card)
        assert [int(pk) for _, pk in drawn] == [p.pk for p in attempts]  # the one under review on top
        assert drawn[0][0] == "10.0,10.0 30.0,10.0 30.0,30.0 10.0,30.0"
        assert re.search(rf'data-polygon="{item.polygon_id}" data-latest="1"', card)
        assert 'stroke-dasharray' in card.split(f'data-polygon="{attempts[0].pk}"')[0].rsplit("<polygon", 1)[1]
        assert f'<image href="{item.image.file.url}"' in card
        for p in attempts:  # each attempt: 1 of 3 verifiers accepted it
            assert re.search(rf'data-votes="{p.pk}">1 of 3 accepted<', card)
        assert 'name="csrfmiddlewaretoken"' in card and 'value="accept"' in card and 'value="reject"' in card
    assert "Review queue (2)" in html

    first, second = queued
    page = staff.post(reverse("admin:crowd_pipeline_resolve", args=[first.pk]),
                      {"decision": "accept", "note": "tight enough"}, follow=True)
    assert f"Item {first.pk}: outline accepted." in page.content.decode()
    staff.post(reverse("admin:crowd_pipeline_resolve", args=[second.pk]), {"decision": "reject"})
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == ("reviewed", "reviewed")
    assert Polygon.objects.get(pk=first.polygon_id).status == "accepted"
    assert Polygon.objects.get(pk=second.polygon_id).status == "rejected"
    assert first.result["review"] == {"accept": True, "note": "tight enough"}
    html = staff.get(url).content.decode()
    assert "Nothing waits for your review." in html and "Review queue (0)" in html
    # Resolving twice (a double click) changes nothing.
    again = staff.post(reverse("admin:crowd_pipeline_resolve", args=[first.pk]), {"decision": "reject"}, follow=True)
    assert "no longer waiting for review" in again.content.decode()
    assert Polygon.objects.get(pk=first.polygon_id).status == "accepted"


def test_an_item_whose_hit_ended_unanswered_waits_in_the_queue_without_outlines(staff, fake_mturk, make_project,
                                                                                make_images):
    project = make_project()
    make_images(project, 1)
    (cats,) = pipeline_configure(project=project, preset="classification",
                                 overrides={"categories": {"max_assignments": 1}})
    engine.pipeline_launch(project_id=project.pk)
    HIT.objects.filter(stage=cats).update(status=HIT.Status.EXPIRED)  # as the sync records it
    engine.pipeline_catch_up(project_id=project.pk)
    item = PipelineItem.objects.get(stage=cats)
    assert item.state == "review"
    html = staff.get(reverse("admin:crowd_pipeline_review", args=[project.pk])).content.decode()
    card = re.search(rf'<div class="review-card" id="item-{item.pk}">(.*?)</form>', html, re.S).group(1)
    assert "No answer came before the HIT ended." in card and "<polygon" not in card
    assert "accepting or rejecting only takes the item out of the queue" in card
    staff.post(reverse("admin:crowd_pipeline_resolve", args=[item.pk]), {"decision": "reject"})
    item.refresh_from_db()
    assert item.state == "reviewed"


# --- Who may see it, and escaping ----------------------------------------------------------------------

def pipeline_urls(project_id: int) -> list[str]:
    return [reverse("admin:crowd_pipeline_index"), reverse("admin:crowd_pipeline", args=[project_id]),
            reverse("admin:crowd_pipeline_workers", args=[project_id]),
            reverse("admin:crowd_pipeline_review", args=[project_id])]


def test_anonymous_and_non_staff_users_are_sent_to_the_login(client, django_user_model, make_project):
    project = make_project()
    pipeline_configure(project=project, preset="classification")
    django_user_model.objects.create_user("mallory", password="pw-for-tests-1234")
    for who in (None, "mallory"):
        if who:
            client.login(username=who, password="pw-for-tests-1234")
        for url in pipeline_urls(project.pk):
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), (who, url)
        for name in ("crowd_pipeline_launch", "crowd_pipeline_configure", "crowd_pipeline_catch_up"):
            response = client.post(reverse(f"admin:{name}", args=[project.pk]), {"preset": "coco"})
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert CrowdStage.objects.filter(project=project).count() == 1


def test_staff_need_the_crowd_stage_permissions(client, django_user_model, make_project):
    project = make_project()
    pipeline_configure(project=project, preset="classification")
    clerk = django_user_model.objects.create_user("clerk", password="pw-for-tests-1234", is_staff=True)
    client.force_login(clerk)
    for url in pipeline_urls(project.pk):
        assert client.get(url).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_crowdstage"))
    clerk = django_user_model.objects.get(pk=clerk.pk)
    client.force_login(clerk)
    page = client.get(reverse("admin:crowd_pipeline", args=[project.pk]))
    assert page.status_code == 200 and b"Launch the pipeline" not in page.content  # may look, not act
    with mock.patch.object(tasks.pipeline_launch, "delay_on_commit") as queued:
        assert client.post(reverse("admin:crowd_pipeline_launch", args=[project.pk])).status_code == 403
    assert not queued.called
    assert client.post(reverse("admin:crowd_pipeline_configure", args=[project.pk]),
                       {"preset": "coco"}).status_code == 403
    assert CrowdStage.objects.filter(project=project).count() == 1


def test_hostile_names_come_out_escaped(staff, running):
    project = running["project"]
    project.name = f"Kitchen {HOSTILE}"
    project.save()
    item = PipelineItem.objects.filter(project=project, state="review").first()
    Category.objects.filter(pk=item.category_id).update(name=f"cup {HOSTILE}")
    Worker.objects.filter(provider_worker_id="w3").update(blocked=True, block_reason=HOSTILE)
    pages = pipeline_urls(project.pk) + [reverse("admin:datasets_project_change", args=[project.pk])]
    for url in pages:
        html = staff.get(url).content.decode()
        assert HOSTILE not in html, url
    review = staff.get(reverse("admin:crowd_pipeline_review", args=[project.pk])).content.decode()
    assert "cup &lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in review
    workers = staff.get(reverse("admin:crowd_pipeline_workers", args=[project.pk])).content.decode()
    assert 'title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"' in workers


def test_the_pipeline_is_linked_from_the_project_and_the_stage_list(staff, make_project):
    project = make_project()
    pipeline_configure(project=project, preset="classification")
    target = reverse("admin:crowd_pipeline", args=[project.pk])
    assert target.encode() in staff.get(reverse("admin:datasets_project_change", args=[project.pk])).content
    project_page = staff.get(reverse("admin:datasets_project_change", args=[project.pk])).content.decode()
    assert "Import images" in project_page  # the datasets app's own buttons stay
    assert target.encode() in staff.get(reverse("admin:crowd_crowdstage_changelist")).content
    index = staff.get(reverse("admin:crowd_pipeline_index")).content.decode()
    assert target in index and "Kitchen objects" in index


# --- manage.py pipeline ---------------------------------------------------------------------------------

def run(*args) -> str:
    out = StringIO()
    call_command("pipeline", *[str(a) for a in args], stdout=out)
    return out.getvalue()


def test_the_command_configures_launches_and_shows_status(fake_mturk, make_project, make_images):
    project = make_project()
    make_images(project, 3)
    Category.objects.create(project=project, coco_id=47, name="cup")
    assert "no pipeline yet" in run(project.pk, "status")
    out = run(project.pk, "configure", "--preset", "coco", "--adaptive")
    assert "Category labeling" in out and "adaptive (at least 2, 95% sure, cap 8)" in out
    assert "-> Instance spotting" in out
    kinds = list(CrowdStage.objects.filter(project=project).order_by("id").values_list("kind", "adaptive"))
    assert kinds == [("categories", True), ("spotting", True), ("segmentation", False), ("verification", True)]

    out = run(project.pk, "launch")
    assert "3 items added, 1 HITs planned, 1 published" in out  # 5 images per HIT
    status = run(project.pk, "status").splitlines()
    header = status[1].split()
    cats_row = next(line for line in status if line.startswith("Category labeling"))
    assert header[:2] == ["stage", "waiting"]
    numbers = cats_row.replace("Category labeling", "").split()
    assert numbers[:5] == ["0", "3", "0", "0", "0"]  # waiting, in progress, done, rejected back, review
    assert "spent $0.00 of $100.00 budget" in status[-2]
    with mock.patch.object(tasks.pipeline_launch, "delay_on_commit") as queued:
        assert "queued crowd.pipeline_launch" in run(project.pk, "launch", "--queue")
    queued.assert_called_once_with(project.pk)


def test_the_command_recomputes_and_fails_on_a_difference(running):
    project = running["project"]
    decided = PipelineItem.objects.filter(project=project).exclude(state__in=["waiting", "active"]).exclude(answers=0)
    out = run(project.pk, "recompute")
    assert f"{decided.count()} items replayed, {decided.count()} the same, 0 different" in out

    tampered = decided.filter(stage__kind="categories").first()
    tampered.result = {**tampered.result, "present": [running["fork"].pk, running["cup"].pk, 999]}
    tampered.save(update_fields=["result"])
    out = StringIO()
    with pytest.raises(CommandError, match="1 item\\(s\\) differ") as failed:
        call_command("pipeline", str(project.pk), "recompute", stdout=out)
    assert failed.value.returncode == 1
    assert f"item {tampered.pk} (categories): stored" in out.getvalue() and "999" in out.getvalue()


def test_the_command_refuses_an_unknown_project_or_an_empty_launch(make_project):
    with pytest.raises(CommandError, match="No project with id 999999"):
        run(999999, "status")
    project = make_project()
    with pytest.raises(CommandError, match="configure"):
        run(project.pk, "launch")


def test_catch_up_from_the_command(fake_mturk, make_project, make_images):
    project = make_project()
    make_images(project, 1)
    pipeline_configure(project=project, preset="classification")
    run(project.pk, "launch")
    assert "0 items moved on, 0 HITs published" in run(project.pk, "catch-up")
    assert HIT.objects.filter(project=project).aggregate(n=Sum("max_assignments"))["n"] == 8


# --- In a browser ----------------------------------------------------------------------------------------

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def real_pixels(project) -> None:
    """Give the fixture's images real pixels: a table top with a cup-sized object at (10..30, 10..30)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    for image in project.images.all():
        im = PILImage.new("RGB", (image.width, image.height), (214, 196, 170))
        draw = ImageDraw.Draw(im)
        draw.rectangle([0, 34, image.width, image.height], fill=(150, 120, 90))
        draw.ellipse([11, 11, 29, 29], fill=(245, 245, 240), outline=(90, 90, 90))
        out = BytesIO()
        im.save(out, "PNG")
        default_storage.delete(image.file.name)
        name = default_storage.save(image.file.name, ContentFile(out.getvalue()))
        type(image).objects.filter(pk=image.pk).update(file=name)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_pipeline_pages_in_chromium(page, live_server, running, django_user_model):
    project = running["project"]
    real_pixels(project)
    services.stage_sync(stage_id=running["stages"][2].pk)  # the outlines drawn so far are paid
    django_user_model.objects.create_superuser("boss", "boss@example.org", "pw-for-tests-1234")
    client = Client()
    client.login(username="boss", password="pw-for-tests-1234")
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1440, "height": 900})

    page.goto(live_server.url + reverse("admin:crowd_pipeline", args=[project.pk]))
    page.evaluate("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")  # the page, not the menu
    page.reload()
    bars = page.locator("#stages .bar")
    assert bars.count() == 4
    done = page.locator('tr[data-stage="categories"] .seg-done').bounding_box()
    whole = page.locator('tr[data-stage="categories"] .bar').bounding_box()
    assert done["width"] == pytest.approx(whole["width"], abs=1)  # every image labelled: a full bar
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / "pipeline-admin.png"), full_page=True)

    page.goto(live_server.url + reverse("admin:crowd_pipeline_review", args=[project.pk]))
    page.screenshot(path="/tmp/pipeline-review.png", full_page=True)
    assert page.locator("svg image").first.evaluate("i => i.getBBox().width") > 0
    latest = page.locator("polygon[data-latest]")
    assert latest.count() == 2 and latest.first.bounding_box()["width"] > 50  # drawn over the scaled image
    page.locator(f"#item-{PipelineItem.objects.filter(state='review').order_by('id').first().pk} "
                 "button[value=accept]").click()
    page.wait_for_selector("text=outline accepted")
    assert PipelineItem.objects.filter(project=project, state="review").count() == 1
    assert not errors
