"""A whole simulated crowd through the real stack, and its quality measured against the truth.

``simulation_setup`` does what a requester and an operator do: a project of procedural scenes
(ingested like any upload), COCO categories, a requester key on our marketplace as the project's
credentials, the pipeline's stages (COCO's fixed redundancy, or adaptive), a training stage with
gold outlines guarding segmentation, and simulated workers who sign up with invitation links.

``simulation_run`` launches the pipeline through Celery (``crowd.pipeline_launch``) and lets the
workers work over HTTP (``crowd.simulation.client``) until every item is decided: they take HITs
in the marketplace, load the task pages and images, post answers to our server and submit the
forms. Publishing goes through the crowd layer's boto3 adapter to the marketplace's MTurk API;
the tools queue ``crowd.pipeline_answer`` for each stored answer, and a Celery worker moves the
items on. The driver itself only reads the database (to know when to stop) and queues the beat's
tasks (sync, training grants, catch-up) more often than beat would, to keep the run short.

``simulation_report`` compares the result with the scenes' truth: category precision and recall,
instance counts, outline IoU, assignments and cost per stage.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import numpy as np
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Avg, Count

from crowd import seams, services, tasks
from crowd.models import HIT, CrowdStage, PipelineItem
from crowd.pipeline.chain import chain_of, pipeline_configure
from crowd.pipeline.engine import pipeline_recompute
from crowd.simulation import metrics
from crowd.simulation.client import MarketWorker
from crowd.simulation.scenes import Scene, scenes_generate
from crowd.simulation.workers import SimWorker, crowd_mix
from datasets.models import Category, InstancePoint, Polygon, Project, Stage
from datasets.services.ingest import image_ingest
from datasets.services.ingest_sources import Candidate

REQUESTER = "sim-requester"
DEFAULT_CROWD = "careful:5,sloppy:2,jittery:1,loose:1,biased:1,spammer:1"
COCO_CATEGORIES = Path(__file__).resolve().parents[2] / "datasets" / "data" / "coco2017_categories.json"
TRAINING_ITEMS = 2


@dataclass
class Member:
    sim: SimWorker
    client: MarketWorker
    trained: bool = False


@dataclass
class Simulation:
    project: Project
    adaptive: bool
    scenes: dict[int, Scene]  # image id -> its truth
    categories: dict[int, str]  # category id -> name
    crowd: list[Member]
    training: CrowdStage | None = None
    gold: dict[int, list[list[float]]] = field(default_factory=dict)  # gold polygon id -> parts
    seconds: float = 0.0
    rounds: int = 0


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def simulation_setup(*, base_url: str, images: int = 24, categories: int = 6, crowd: str = DEFAULT_CROWD,
                     adaptive: bool = False, seed: int = 1, training: bool = True,
                     overrides: dict[str, dict[str, Any]] | None = None) -> Simulation:
    base = base_url.rstrip("/")
    coco = json.loads(COCO_CATEGORIES.read_text())[:categories]
    owner, _ = get_user_model().objects.get_or_create(username=REQUESTER)
    out = _command("create_requester_key", REQUESTER, "--balance", "10000", "--public")
    key = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out)[1]
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out)[1]
    mode = "adaptive" if adaptive else "fixed"
    project = Project.objects.create(name=f"Simulation ({mode}, seed {seed}, {time.strftime('%H:%M:%S')})",
                                     owner=owner, budget_usd=Decimal("2000.00"),
                                     description="Procedural scenes with exact truth (manage.py simulate).")
    services.credentials_set(project=project, access_key_id=key, secret_access_key=secret,
                             endpoint_url=base + "/mturk-api/")
    cats = {c["name"]: Category.objects.create(project=project, coco_id=c["id"], name=c["name"],
                                               supercategory=c["supercategory"]) for c in coco}
    scenes = scenes_generate(n=images, categories=list(cats), seed=seed)
    by_image: dict[int, Scene] = {}
    for scene in scenes:
        data = scene.jpeg()
        entry = image_ingest(project=project, candidate=Candidate(
            name=scene.name + ".jpg", stream=lambda data=data: io.BytesIO(data), size=len(data)),
            license="CC0-1.0", attribution="Annotator simulation")
        if entry.get("status") == "duplicate":
            continue  # two empty scenes can render alike; one is enough
        if entry.get("status") != "imported":
            raise RuntimeError(f"the scene {scene.name} was not imported: {entry}")
        by_image[entry["image"]] = scene
    sim = Simulation(project=project, adaptive=adaptive, scenes=by_image,
                     categories={c.pk: name for name, c in cats.items()}, crowd=[])
    stage_overrides = {"segmentation": {"require_training": training}}
    for kind, values in (overrides or {}).items():
        stage_overrides.setdefault(kind, {}).update(values)
    for kind in ("categories", "spotting", "segmentation", "verification", "training"):
        stage_overrides.setdefault(kind, {}).update(lifetime_s=86400, assignment_duration_s=600,
                                                    auto_approval_delay_s=86400, min_approval_rate=None,
                                                    min_approved_hits=None, locales=[])
    stage_overrides.pop("training")
    pipeline_configure(project=project, preset="coco", adaptive=adaptive, overrides=stage_overrides)
    if training:
        sim.training, sim.gold = _training_stage(project, by_image, cats, n_workers=len(crowd_mix(crowd, seed=seed)))
    code = _command("create_worker_invite", REQUESTER, "--uses", "1000").strip().rstrip("/").split("/")[-1]
    for worker in crowd_mix(crowd, seed=seed):
        client = MarketWorker(base, f"{worker.id}-p{project.pk}")
        client.sign_up(code)
        sim.crowd.append(Member(worker, client))
    return sim


def _training_stage(project: Project, scenes: dict[int, Scene], cats: dict[str, Category],
                    n_workers: int) -> tuple[CrowdStage, dict[int, list[list[float]]]]:
    """Gold outlines (the truth of the first objects) and a training stage that asks for them."""
    gold: dict[int, list[list[float]]] = {}
    for image_id, scene in scenes.items():
        for obj in scene.objects:
            if len(gold) == TRAINING_ITEMS:
                break
            xs, ys = obj.parts[0][0::2], obj.parts[0][1::2]
            polygon = Polygon.objects.create(
                image_id=image_id, category=cats[obj.category], parts=obj.parts, area=obj.area,
                bbox=[min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], stage=Stage.IMPORT,
                made_by=REQUESTER, status=Polygon.Status.ACCEPTED)
            gold[polygon.pk] = obj.parts
    stage = CrowdStage.objects.create(
        project=project, name="Training: outline objects", kind="training", stage=Stage.SEGMENTATION,
        title="Training: outline objects", description="Outline each object; pass to unlock outlining work.",
        reward=Decimal("0.02"), max_assignments=min(max(n_workers, 1), 9), items_per_hit=TRAINING_ITEMS,
        lifetime_s=86400, assignment_duration_s=600, auto_approval_delay_s=86400, locales=[])
    return stage, gold


# --- Running ------------------------------------------------------------------------------------

def _answer(member: Member, sim: Simulation, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    w = member.sim
    if kind == "categories":
        ids = {c["name"]: c["id"] for group in data["supercategories"] for c in group["categories"]}
        return w.answer_categories([(i["id"], sim.scenes[i["id"]]) for i in data["images"]], ids)
    if kind == "spotting":
        image = data["image"]["id"]
        return w.answer_spotting(image, sim.scenes[image], data["category"]["name"], data["category"]["id"])
    if kind == "segmentation":
        image = data["image"]["id"]
        point = data["point"]
        return w.answer_segmentation(point["id"], (point["x"], point["y"]), sim.scenes[image],
                                     data["category"]["name"])
    if kind == "verification":
        return w.answer_verification([(p["id"], p["parts"], p["category"]["name"], sim.scenes[p["image"]["id"]])
                                      for p in data["polygons"]])
    items = [(i["id"], sim.gold[i["id"]], sim.scenes[i["image"]["id"]]) for i in data["items"]]
    return w.answer_training(items, attempt=1)


def _settle(limit: float = 30.0) -> None:
    """Wait until the Celery queue is empty and no task is running (or ``limit`` seconds)."""
    from django.conf import settings

    from annotator.celery import app

    deadline = time.monotonic() + limit
    folder = (settings.CELERY_BROKER_TRANSPORT_OPTIONS or {}).get("data_folder_in")
    if settings.CELERY_BROKER_URL.startswith("filesystem://") and folder:
        queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}.msg"
        while time.monotonic() < deadline:
            if not any(name.partition(".")[2] == queue for name in os.listdir(folder)):
                break
            time.sleep(0.05)
    while time.monotonic() < deadline:
        inspect = app.control.inspect(timeout=0.5)
        busy = [t for tasks_ in (inspect.active() or {}).values() for t in tasks_]
        busy += [t for tasks_ in (inspect.reserved() or {}).values() for t in tasks_]
        if not busy:
            return


def _open_items(project_id: int) -> int:
    return PipelineItem.objects.filter(project_id=project_id, state__in=[
        PipelineItem.State.ACTIVE, PipelineItem.State.WAITING]).count()


def simulation_run(sim: Simulation, *, timeout: float = 900.0, progress: Callable[[str], None] | None = None,
                   seed: int = 1, alive: Callable[[], None] | None = None) -> Simulation:
    """Work until every item is decided or ``timeout``; ``alive`` raises if the stack died."""
    started = time.monotonic()
    project = sim.project
    tasks.pipeline_launch.delay(project.pk)
    if sim.training:
        tasks.stage_launch.delay(sim.training.pk, items=list(sim.gold))
    rng = np.random.default_rng(seed)
    kinds = ["verification", "segmentation", "spotting", "categories"]
    idle = 0
    last_report = 0.0
    while time.monotonic() - started < timeout:
        if alive is not None:
            alive()
        sim.rounds += 1
        stages = {s.kind: s for s in CrowdStage.objects.filter(project=project) if s.hit_type_id}
        worked = 0
        trained_now = False
        for k in rng.permutation(len(sim.crowd)):
            member = sim.crowd[k]
            # Each worker picks among the groups at random (a crowd spreads over the work).
            order = ([] if member.trained else ["training"]) + [kinds[j] for j in rng.permutation(len(kinds))]
            for kind in order:
                stage = stages.get(kind)
                if stage is None or (kind == "training" and member.trained):
                    continue
                task = member.client.take(stage.hit_type_id)
                if task is None:
                    continue
                member.client.answer(task, _answer(member, sim, kind, task.data))
                if kind == "training":
                    member.trained = trained_now = True
                worked += 1
                break
        if trained_now:
            tasks.training_grants.delay()
        if worked:
            # People take minutes per task; the pipeline reacts in milliseconds. Letting the
            # Celery worker catch up after each round keeps the simulated crowd from outrunning
            # it, as a real one would not.
            _settle()
        if PipelineItem.objects.filter(project=project).exists() and not _open_items(project.pk):
            break
        if worked:
            idle = 0
        else:
            idle += 1
            if idle % 10 == 0:  # what beat does every minute: catch up, sync, grant
                tasks.pipeline_catch_up.delay()
                tasks.sync_all.delay()
                tasks.training_grants.delay()
            time.sleep(0.3)
        if progress and time.monotonic() - last_report > 5:
            last_report = time.monotonic()
            counts = dict(PipelineItem.objects.filter(project=project).values_list("state").annotate(n=Count("id")))
            progress(f"{time.monotonic() - started:5.0f} s  items {counts}")
    sim.seconds = time.monotonic() - started
    return sim


# --- Measuring ----------------------------------------------------------------------------------

def simulation_report(sim: Simulation) -> dict[str, Any]:
    project = sim.project
    names = sim.categories
    truth_cats = {str(i): set(s.categories) for i, s in sim.scenes.items()}
    predicted_cats: dict[str, set[str]] = {str(i): set() for i in sim.scenes}
    for image_id, result in PipelineItem.objects.filter(project=project, stage__kind="categories").exclude(
            state__in=["active", "waiting"]).values_list("image_id", "result"):
        predicted_cats[str(image_id)] = {names[c] for c in (result or {}).get("present", [])}
    truth_counts = {(str(i), c): s.count(c) for i, s in sim.scenes.items() for c in s.categories}
    predicted_counts: dict[tuple[str, str], int] = {}
    for image_id, cat, n in (InstancePoint.objects.filter(image__project=project, stage=Stage.AGGREGATE)
                             .values_list("image_id", "category_id").annotate(n=Count("id"))):
        predicted_counts[(str(image_id), names[cat])] = n
    truth_outlines = {(str(i), c): [o.parts for o in s.of_category(c)] for i, s in sim.scenes.items()
                      for c in s.categories}
    predicted_outlines: dict[tuple[str, str], list] = {}
    for image_id, cat, parts in (Polygon.objects.filter(image__project=project, stage=Stage.SEGMENTATION,
                                                        status=Polygon.Status.ACCEPTED)
                                 .values_list("image_id", "category_id", "parts")):
        predicted_outlines.setdefault((str(image_id), names[cat]), []).append(parts)
    stages = {}
    total_assignments, total_cost = 0, Decimal("0.00")
    for stage in chain_of(project.pk) + ([sim.training] if sim.training else []):
        refs = list(HIT.objects.filter(stage=stage).exclude(task_ref=None).values_list("task_ref", flat=True))
        answers = sum(len(v) for v in seams.answers_for_tasks(refs).values())
        unit = stage.reward + services.fee_for(stage.reward, stage.max_assignments)
        cost = unit * answers
        counts = dict(PipelineItem.objects.filter(stage=stage).values_list("state").annotate(n=Count("id")))
        decided = PipelineItem.objects.filter(stage=stage).exclude(state__in=["active", "waiting"])
        per_item = decided.aggregate(a=Avg("answers"))["a"]  # answers each item was decided on
        stages[stage.kind] = {"items": sum(counts.values()), "assignments": answers, "cost": str(cost),
                              "per_item": round(per_item or 0.0, 2), "states": counts}
        total_assignments += answers
        total_cost += cost
    replay = pipeline_recompute(project_id=project.pk)
    return {
        "mode": "adaptive" if sim.adaptive else "fixed",
        "images": len(sim.scenes), "workers": len(sim.crowd), "seconds": round(sim.seconds, 1),
        "unfinished": _open_items(project.pk),
        "categories": metrics.category_scores(truth_cats, predicted_cats),
        "instances": metrics.instance_counts(truth_counts, predicted_counts),
        "outlines": metrics.outline_scores(truth_outlines, predicted_outlines),
        "stages": stages, "assignments": total_assignments, "cost": str(total_cost),
        "recompute": {"items": replay.items, "changed": len(replay.changed)},
        "review_queue": PipelineItem.objects.filter(project=project, state=PipelineItem.State.REVIEW).count(),
        "project": project.pk,
    }
