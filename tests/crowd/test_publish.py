"""Publishing a stage through boto3 against the fake MTurk: one HIT per token, whatever fails."""
from __future__ import annotations

from decimal import Decimal

import pytest

from crowd import services
from crowd.answers import EXTERNAL_QUESTION_NS
from crowd.models import HIT, CrowdStage, TrainingQualification
from crowd.providers.base import TransientProviderError
from tests.crowd.crowd_fixtures import TEST_KEY_ID, fake_mturk, make_images, make_project, make_stage  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


def test_launch_publishes_external_question_hits_with_items_and_requirements(
        fake_mturk, make_project, make_images, make_stage):
    project = make_project()
    images = make_images(project, 5)
    stage = make_stage(project)
    plan, published = services.stage_launch(stage_id=stage.pk)

    assert len(plan.created) == 3 and published.published == 3  # 5 images, 2 per HIT
    svc = fake_mturk.service
    assert len(svc.state.hits) == 3
    hits = list(HIT.objects.order_by("id"))
    assert [h.items for h in hits] == [[images[0].pk, images[1].pk], [images[2].pk, images[3].pk], [images[4].pk]]
    for hit in hits:
        remote = svc.state.hits[hit.provider_hit_id]
        assert hit.status == HIT.Status.PUBLISHED and hit.hit_type_id == remote.type.id
        assert remote.max_assignments == 3
        assert remote.annotation == f"annotator:hit:{hit.pk}"
        assert EXTERNAL_QUESTION_NS in remote.question
        assert f"<ExternalURL>{hit.task_url}</ExternalURL>" in remote.question
        assert hit.task_url.startswith("http://127.0.0.1") and "/tasks/categories/" in hit.task_url
    reqs = {r["QualificationTypeId"]: r for r in svc.state.hits[hits[0].provider_hit_id].type.requirements}
    assert reqs["000000000000000000L0"]["IntegerValues"] == [95]
    assert reqs["00000000000000000040"]["IntegerValues"] == [100]
    assert reqs["00000000000000000071"]["LocaleValues"] == [{"Country": "US"}, {"Country": "CA"}]
    # One HIT type for the stage, registered through CreateHITType; calls signed with the settings' key.
    assert svc.calls["CreateHITType"] == 1 and svc.calls["CreateHITWithHITType"] == 3
    assert set(svc.access_keys) == {TEST_KEY_ID}

    # Launching again plans nothing new and publishes nothing twice.
    plan2, published2 = services.stage_launch(stage_id=stage.pk)
    assert plan2.created == [] and published2.published == 0 and len(svc.state.hits) == 3


def test_a_create_hit_that_times_out_after_creating_is_retried_with_the_same_token(
        fake_mturk, make_project, make_images, make_stage):
    """botocore retries the dropped call; the fake answers HitAlreadyExists; we look the HIT up."""
    project = make_project()
    make_images(project, 2)
    stage = make_stage(project)
    svc = fake_mturk.service
    svc.inject("CreateHITWithHITType", "drop", 1)

    plan, published = services.stage_launch(stage_id=stage.pk)

    assert published.published == 1
    assert svc.calls["CreateHITWithHITType"] == 2  # the dropped one and its retry
    assert len(svc.state.hits) == 1  # ...but one HIT
    hit = HIT.objects.get()
    assert hit.provider_hit_id in svc.state.hits and svc.calls["GetHIT"] == 1


def test_a_publish_that_failed_for_good_is_retried_later_without_a_second_hit(
        fake_mturk, settings, make_project, make_images, make_stage):
    """With botocore's retries used up, the task fails (Celery retries it); the rerun finds the HIT."""
    settings.MTURK_MAX_ATTEMPTS = 0  # botocore: retries after the first attempt
    project = make_project()
    make_images(project, 2)
    stage = make_stage(project)
    svc = fake_mturk.service
    services.stage_hit_type(stage=stage)
    plan = services.hits_plan(stage=stage)
    svc.inject("CreateHITWithHITType", "drop", 1)
    with pytest.raises(TransientProviderError):
        services.hit_publish(hit_id=plan.created[0])
    assert len(svc.state.hits) == 1 and HIT.objects.get().status == HIT.Status.PENDING

    hit = services.hit_publish(hit_id=plan.created[0])  # what Celery's retry runs
    assert hit.status == HIT.Status.PUBLISHED and len(svc.state.hits) == 1
    assert hit.provider_hit_id == next(iter(svc.state.hits))
    assert HIT.objects.get().publish_attempts == 2
    services.hit_publish(hit_id=plan.created[0])  # and once more: nothing is sent
    assert svc.calls["CreateHITWithHITType"] == 2


def test_throttling_and_service_faults_are_retried_by_botocore(fake_mturk, make_project, make_images, make_stage):
    project = make_project()
    make_images(project, 4)
    stage = make_stage(project)
    svc = fake_mturk.service
    svc.inject("CreateHITWithHITType", "throttle", 2)
    svc.inject("GetAccountBalance", "5xx", 2)
    plan, published = services.stage_launch(stage_id=stage.pk)
    assert published.published == 2 and len(svc.state.hits) == 2
    assert svc.calls["CreateHITWithHITType"] == 4 and svc.calls["GetAccountBalance"] == 3


def test_publishing_stops_at_the_budget(fake_mturk, make_project, make_images, make_stage):
    # A HIT: 3 x ($0.10 + $0.02 fee) = $0.36; $1.00 pays for two of them.
    project = make_project(budget="1.00")
    make_images(project, 10)
    stage = make_stage(project)
    plan, published = services.stage_launch(stage_id=stage.pk)
    assert len(plan.created) == 2 and plan.stopped_by_budget == 3
    assert published.published == 2 and len(fake_mturk.service.state.hits) == 2
    stage.refresh_from_db()
    assert stage.status == CrowdStage.Status.PAUSED and "Budget reached" in stage.status_reason
    assert services.project_reserved(project.pk) == Decimal("0.72")


def test_publishing_stops_at_the_account_balance(fake_mturk, make_project, make_images, make_stage):
    fake_mturk.service.state.balance = Decimal("1.00")
    project = make_project(budget="50.00")
    make_images(project, 10)
    stage = make_stage(project)
    plan, published = services.stage_launch(stage_id=stage.pk)
    assert len(plan.created) == 5
    assert published.published == 2 and published.stopped_by_balance == 3
    assert fake_mturk.service.calls["GetAccountBalance"] == 1
    stage.refresh_from_db()
    assert stage.status == CrowdStage.Status.PAUSED and "balance" in stage.status_reason
    assert HIT.objects.filter(status=HIT.Status.PENDING).count() == 3


def test_training_qualification_is_created_once_and_required(fake_mturk, make_project, make_images, make_stage):
    project = make_project()
    make_images(project, 2)
    stage = make_stage(project, require_training=True)
    services.stage_launch(stage_id=stage.pk)
    services.stage_hit_type(stage=stage)
    svc = fake_mturk.service
    qual = TrainingQualification.objects.get(project=project)
    assert svc.calls["CreateQualificationType"] == 1 and qual.qualification_type_id in svc.state.qual_types
    hit = HIT.objects.get()
    reqs = [r["QualificationTypeId"] for r in svc.state.hits[hit.provider_hit_id].type.requirements]
    assert qual.qualification_type_id in reqs
    # A worker without the qualification cannot take the HIT; granting it lets them.
    with pytest.raises(ValueError, match="not qualified"):
        svc.accept(hit.provider_hit_id, "AWORKER0000001")
    services.training_grant(project_id=project.pk, provider_worker_id="AWORKER0000001")
    services.training_grant(project_id=project.pk, provider_worker_id="AWORKER0000001")
    assert svc.calls["AssociateQualificationWithWorker"] == 1
    assert svc.accept(hit.provider_hit_id, "AWORKER0000001")


def test_qualification_type_lost_answer_is_found_by_name(fake_mturk, make_project):
    project = make_project()
    svc = fake_mturk.service
    svc.inject("CreateQualificationType", "drop", 1)
    qual = services.training_qualification_ensure(project=project)
    assert len(svc.state.qual_types) == 1 and qual.qualification_type_id in svc.state.qual_types
    assert svc.calls["ListQualificationTypes"] == 1


def test_plain_http_task_pages_are_refused_outside_loopback(fake_mturk, settings, make_project, make_images,
                                                           make_stage):
    settings.PUBLIC_BASE_URL = "http://annotator.example.org"
    project = make_project()
    make_images(project, 2)
    stage = make_stage(project)
    with pytest.raises(ValueError, match="not https"):
        services.hits_plan(stage=stage)
    assert HIT.objects.count() == 0
    settings.PUBLIC_BASE_URL = "https://annotator.example.org"
    plan = services.hits_plan(stage=stage)
    assert HIT.objects.get(pk=plan.created[0]).task_url.startswith("https://annotator.example.org/tasks/")


def test_a_publish_retried_after_the_token_expired_finds_the_earlier_hit(
        fake_mturk, settings, monkeypatch, make_project, make_images, make_stage):
    """MTurk forgets a UniqueRequestToken after 24 hours; then the HIT is looked for by its annotation."""
    from datetime import timedelta

    from crowd import clock

    settings.MTURK_MAX_ATTEMPTS = 0
    project = make_project()
    make_images(project, 2)
    stage = make_stage(project)
    services.stage_hit_type(stage=stage)
    hit_id = services.hits_plan(stage=stage).created[0]
    svc = fake_mturk.service
    svc.inject("CreateHITWithHITType", "drop", 1)
    with pytest.raises(TransientProviderError):
        services.hit_publish(hit_id=hit_id)
    later = clock.now() + timedelta(hours=25)
    monkeypatch.setattr(clock, "now", lambda: later)
    svc.advance(hours=25)  # the provider no longer knows the token

    hit = services.hit_publish(hit_id=hit_id)
    assert hit.status == HIT.Status.PUBLISHED and len(svc.state.hits) == 1
    assert hit.provider_hit_id == next(iter(svc.state.hits))
    assert svc.calls["ListHITs"] == 1 and svc.calls["CreateHITWithHITType"] == 1
