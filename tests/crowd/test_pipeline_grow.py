"""Adaptive HITs start with ``min_answers`` assignments and grow one at a time while an item is
unsure (CreateAdditionalAssignmentsForHIT), on the fake MTurk server behind the boto3 adapter."""
from __future__ import annotations

import pytest

from crowd import services
from crowd.models import HIT, PipelineItem
from crowd.pipeline import engine
from crowd.providers.base import TransientProviderError
from frontend.models import TaskItem
from frontend.services import answer_submit
from tests.crowd.crowd_fixtures import fake_mturk, make_images, make_project  # noqa: F401
from tests.crowd.test_pipeline import answer, hits_of, scene, small_chain  # noqa: F401

pytestmark = pytest.mark.django_db
EXTEND = "CreateAdditionalAssignmentsForHIT"


@pytest.fixture(autouse=True)
def fresh_skills():
    # Worker estimates are cached per stage id, and ids come back after a test's rollback.
    from django.core.cache import cache

    cache.clear()


def adaptive_categories(project, cap: int = 8):
    cats, *_ = small_chain(project, adaptive=True, overrides={
        "categories": {"max_assignments": cap, "min_answers": 2, "confidence": 0.95, "items_per_hit": 2}})
    engine.pipeline_launch(project_id=project.pk)
    return cats, hits_of(cats)[0]


def marks(hit: HIT, present: list[int]) -> dict:
    return {"images": [{"image": i, "present": list(present)} for i in hit.items]}


def remote_max(fake, hit: HIT) -> int:
    return fake.service.state.hits[hit.provider_hit_id].max_assignments


def test_an_adaptive_hit_is_published_with_min_answers_and_reserves_its_cap(scene):
    fake, project, images, cup, fork = scene
    cats, hit = adaptive_categories(project)
    assert hit.max_assignments == 2 and remote_max(fake, hit) == 2
    # The budget still holds what the HIT may grow to: 8 x (0.06 + 0.01).
    assert hit.cost_reserved == services.hit_cost(reward=cats.reward, max_assignments=8)
    # A fixed stage is put up with its whole redundancy, as before.
    fixed, *_ = small_chain(project, prefix="fixed ", overrides={"categories": {"max_assignments": 3}})
    assert services.hit_first_assignments(fixed) == 3


def test_a_confident_item_is_decided_without_growing_the_hit(scene):
    fake, project, images, cup, fork = scene
    cats, hit = adaptive_categories(project)
    for worker in ("w1", "w2"):
        answer(fake, hit, worker, marks(hit, [cup.pk]))
    assert set(PipelineItem.objects.filter(hit=hit).values_list("state", flat=True)) == {"done"}
    assert fake.service.calls[EXTEND] == 0 and remote_max(fake, hit) == 2


def test_an_unsure_item_grows_its_hit_once_even_when_the_task_runs_again(scene):
    fake, project, images, cup, fork = scene
    cats, hit = adaptive_categories(project)
    answer(fake, hit, "w1", marks(hit, [cup.pk]))
    assert fake.service.calls[EXTEND] == 0  # w2 still holds the second slot
    answer(fake, hit, "w2", marks(hit, [fork.pk]))  # a split: nobody is sure about the fork
    assert PipelineItem.objects.filter(hit=hit, state="active").count() == 2
    assert remote_max(fake, hit) == 3 and fake.service.calls[EXTEND] == 1
    hit.refresh_from_db()
    assert hit.max_assignments == 3
    # The task again (a retried Celery task), then the beat's catch-up: nothing more is asked.
    engine.items_advance(hit_id=hit.pk)
    engine.pipeline_catch_up(project_id=project.pk)
    assert remote_max(fake, hit) == 3 and fake.service.calls[EXTEND] == 1
    # A run that read the HIT before the extension (a concurrent task) does not extend it again.
    services.hit_add_assignments(hit_id=hit.pk, number=1, from_total=2)
    assert remote_max(fake, hit) == 3 and fake.service.calls[EXTEND] == 1

    # More workers see the cup only: one slot at a time until both images are sure.
    given = 2
    while PipelineItem.objects.filter(hit=hit, state="active").exists():
        given += 1
        answer(fake, hit, f"w{given}", marks(hit, [cup.pk]))
    assert all(it.result["present"] == [cup.pk] for it in PipelineItem.objects.filter(hit=hit))
    assert given < 8 and remote_max(fake, hit) == given and fake.service.calls[EXTEND] == given - 2


def test_an_extension_whose_answer_was_lost_is_not_made_twice(scene):
    fake, project, images, cup, fork = scene
    cats, hit = adaptive_categories(project)
    answer(fake, hit, "w1", marks(hit, [cup.pk]))
    # The provider extends the HIT, then the connection drops before it answers, every time.
    fake.service.inject(EXTEND, "drop", 10)
    with pytest.raises(TransientProviderError):
        answer(fake, hit, "w2", marks(hit, [fork.pk]))
    assert remote_max(fake, hit) == 3
    hit.refresh_from_db()
    assert hit.max_assignments == 2  # we do not know yet
    fake.service.injections.clear()
    engine.items_advance(hit_id=hit.pk)  # the retried task: the same token, answered "already extended"
    hit.refresh_from_db()
    assert hit.max_assignments == 3 and remote_max(fake, hit) == 3


def test_at_the_cap_the_item_is_decided_by_the_cap_rule(scene):
    fake, project, images, cup, fork = scene
    cats, hit = adaptive_categories(project, cap=3)
    answer(fake, hit, "w1", marks(hit, [cup.pk]))
    answer(fake, hit, "w2", marks(hit, [fork.pk]))
    assert remote_max(fake, hit) == 3
    answer(fake, hit, "w3", marks(hit, []))  # still unsure, but the cap is reached
    items = PipelineItem.objects.filter(hit=hit)
    assert set(items.values_list("state", flat=True)) == {"done"}
    assert all(it.answers == 3 for it in items)
    assert remote_max(fake, hit) == 3 and fake.service.calls[EXTEND] == 1


def test_the_sync_keeps_a_hit_that_may_still_grow(scene):
    fake, project, images, cup, fork = scene
    cats, hit = adaptive_categories(project)
    task = TaskItem.objects.get(pk=hit.task_ref)
    for worker, present in (("w1", [cup.pk]), ("w2", [fork.pk])):
        aid = fake.service.accept(hit.provider_hit_id, worker)
        answer_submit(task=task, worker_id=worker, assignment_id=aid, hit_id=hit.provider_hit_id,
                      answer={"schema": "annotator.answer/categories", "version": 1, **marks(hit, present)})
        fake.service.submit(aid, {"done": "1"})
    # Both slots are answered and reviewed before the pipeline looked: the HIT is not deleted,
    # so its unsure items are not forced by the catch-up.
    services.hit_sync(hit_id=hit.pk)
    hit.refresh_from_db()
    assert hit.status != HIT.Status.DISPOSED and not fake.service.state.hits[hit.provider_hit_id].disposed
    engine.pipeline_catch_up(project_id=project.pk)
    assert PipelineItem.objects.filter(hit=hit, state="active").count() == 2
    assert remote_max(fake, hit) == 3


def test_throttling_is_transient_and_the_retry_extends_once(scene):
    fake, project, images, cup, fork = scene
    cats, hit = adaptive_categories(project)
    answer(fake, hit, "w1", marks(hit, [cup.pk]))
    fake.service.inject(EXTEND, "throttle", 10)  # more than botocore's own attempts
    with pytest.raises(TransientProviderError):
        answer(fake, hit, "w2", marks(hit, [fork.pk]))
    assert remote_max(fake, hit) == 2
    fake.service.injections.clear()
    engine.items_advance(hit_id=hit.pk)
    engine.items_advance(hit_id=hit.pk)
    hit.refresh_from_db()
    assert hit.max_assignments == 3 and remote_max(fake, hit) == 3
