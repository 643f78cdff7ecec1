"""Hostile text stored where users can put it (category and project names, file names, worker ids,
HIT titles, a requester's feedback to a worker) comes out escaped: in the tools' page data, in
the admin, and on the marketplace's worker pages. The browser check is in test_browser.py."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from datasets.models import Category, Image, ImageImport, Project
from datasets.services.ingest import images_import
from datasets.services.ingest_sources import source_uploads
from frontend.services import task_item_create, task_path
from tests.datasets.conftest import jpeg_bytes
from tests.marketplace.conftest import hit_kwargs

SCRIPT = "</script><script>alert('xss-script')</script>"
IMG = '"><img src=x onerror=alert("xss-img")>'
PAYLOADS = [SCRIPT, IMG]


def assert_escaped(html: str, where: str) -> None:
    for raw in ("<script>alert(", "<img src=x onerror", "</script><script>"):
        assert raw not in html, (where, raw)


@pytest.fixture
def hostile(db):
    owner = get_user_model().objects.create_superuser("root", password="Root-pass-1180")
    project = Project.objects.create(name=f"Birds {IMG}", description=SCRIPT, owner=owner)
    cats = [Category.objects.create(project=project, coco_id=i + 1, name=f"cat{i} {p}", supercategory=f"sup {p}")
            for i, p in enumerate(PAYLOADS)]
    files = [SimpleUploadedFile(f"photo {IMG}.jpg", jpeg_bytes(seed=41), content_type="image/jpeg"),
             SimpleUploadedFile(f"notes {SCRIPT}.jpg", b"not an image", content_type="image/jpeg")]
    images_import(project=project, source=source_uploads(files))
    image = Image.objects.get(project=project)
    client = Client()
    client.force_login(owner)
    return project, cats, image, client


@pytest.mark.django_db
def test_the_tools_page_carries_hostile_names_as_inert_json(hostile):
    project, cats, image, _ = hostile
    task = task_item_create(kind="categories", project=project, images=[image])
    html = Client().get(task_path(task=task) + "?assignmentId=A&hitId=H&workerId=W&turkSubmitTo=https://x").content.decode()
    assert_escaped(html, "task page")
    # The names are all there, in a JSON block with < > & escaped, which the script reads as data.
    start = html.index('<script id="task-data" type="application/json">') + len('<script id="task-data" type="application/json">')
    data = json.loads(html[start:html.index("</script>", start)])
    strings: list[str] = []

    def walk(value):
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            [walk(v) for v in value.values()]
        elif isinstance(value, list):
            [walk(v) for v in value]

    walk(data)
    for cat in cats:
        assert cat.name in strings and cat.supercategory in strings
    assert project.name in strings


@pytest.mark.django_db
def test_the_admin_escapes_names_file_names_and_reports(hostile):
    project, cats, image, client = hostile
    failed = ImageImport.objects.get(project=project)
    # A worker id that a forged submission carried, shown in the answers' list.
    task = task_item_create(kind="categories", project=project, images=[image])
    body = {"host": {"assignmentId": "A-x", "hitId": "H", "workerId": f"W{IMG}"},
            "answer": {"schema": "annotator.answer/categories", "version": 1,
                       "images": [{"image": image.pk, "present": [cats[0].pk]}]}}
    assert Client().post(task_path(task=task) + "answer", data=json.dumps(body),
                         content_type="application/json").status_code == 201
    pages = {
        "projects": reverse("admin:datasets_project_changelist"),
        "project": reverse("admin:datasets_project_change", args=[project.pk]),
        "categories": reverse("admin:datasets_category_changelist"),
        "images": reverse("admin:datasets_image_changelist"),
        "image": reverse("admin:datasets_image_change", args=[image.pk]),
        "import report": reverse("admin:datasets_imageimport_change", args=[failed.pk]),
        "answers": reverse("admin:frontend_taskanswer_changelist"),
        "search": reverse("admin:datasets_image_changelist") + "?q=" + IMG,
    }
    for where, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, where
        assert_escaped(response.content.decode(), where)
    report = client.get(pages["import report"]).content.decode()
    assert "photo &quot;&gt;&lt;img src=x onerror=alert(&quot;xss-img&quot;)&gt;.jpg" in report
    from django.utils.html import escape

    for entry in failed.report:  # file names as the report keeps them, shown escaped
        assert "<" in entry["name"] or ">" in entry["name"]
        assert escape(entry["name"]) in report
    assert "&lt;img src=x onerror" in client.get(pages["projects"]).content.decode()


@pytest.mark.django_db(transaction=True)
def test_marketplace_pages_escape_titles_and_feedback(market):
    mturk = market.requester("req").client()
    worker = market.worker()
    hit_id = mturk.create_hit(**hit_kwargs(market, Title=f"Birds {IMG}", Description=SCRIPT,
                                           Keywords=f"k{IMG}"))["HIT"]["HITId"]
    home = worker.get("/market/").text
    assert "Birds &quot;&gt;&lt;img" in home
    assert_escaped(home, "market home")
    assert_escaped(worker.get(f"/market/hits/{hit_id}/preview/").text, "preview")
    aid = worker.accept_assignment_id(hit_id)
    assert_escaped(worker.get(f"/market/work/{aid}/").text, "work page")
    worker.submit(aid, answer=SCRIPT)
    mturk.reject_assignment(AssignmentId=aid, RequesterFeedback=f"Wrong {SCRIPT}")
    board = worker.get("/market/dashboard/").text
    assert "Wrong &lt;/script&gt;&lt;script&gt;" in board
    assert_escaped(board, "dashboard")
    # The operators' console shows the same titles, answers and feedback escaped.
    from crowd.marketplace.models import Assignment, HIT, HITType

    root = Client()
    root.force_login(get_user_model().objects.create_superuser("operator", password="Operator-pass-4410"))
    pk = Assignment.objects.get(assignment_id=aid).pk
    for url in (reverse("admin:marketplace_hittype_changelist"),
                reverse("admin:marketplace_hittype_change", args=[HITType.objects.get().pk]),
                reverse("admin:marketplace_hit_change", args=[HIT.objects.get().pk]),
                reverse("admin:marketplace_assignment_changelist"),
                reverse("admin:marketplace_assignment_change", args=[pk])):
        page = root.get(url)
        assert page.status_code == 200, url
        assert_escaped(page.content.decode(), url)
    assert "Wrong &lt;/script&gt;" in root.get(reverse("admin:marketplace_assignment_change", args=[pk])).content.decode()
    # The requester reads the answer back as data (XML-escaped), not markup.
    answer = mturk.get_assignment(AssignmentId=aid)["Assignment"]["Answer"]
    assert "&lt;script&gt;" in answer and "<script>" not in answer
