"""import_images, import_categories and load_demo, run as an operator would run them."""
from __future__ import annotations

import json
import tarfile
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from datasets.models import Category, Image, ImageImport, Project
from tests.datasets.conftest import image_bytes, jpeg_bytes
from tests.factories import ProjectFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


def run(*args, **kwargs) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    if args[0] == "import_images":
        kwargs.setdefault("no_progress", True)
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def test_import_images_from_a_folder_by_project_name(write):
    project = ProjectFactory(name="Street scenes")
    write("a.jpg", jpeg_bytes(seed=1))
    write("b.png", image_bytes("PNG", seed=2))
    write("notes.jpg", b"hello")
    out, _ = run("import_images", "Street scenes", str(write.folder), license="CC-BY 4.0", attribution="Ann")
    assert "2 imported, 0 duplicate(s), 1 failed (of 3)" in out
    assert "notes.jpg: not an image (cannot identify image file)" in out
    assert set(Image.objects.filter(project=project).values_list("license", "attribution")) == {("CC-BY 4.0", "Ann")}
    # A rerun skips what is in and still succeeds.
    out, _ = run("import_images", str(project.pk), str(write.folder))
    assert "0 imported, 2 duplicate(s), 1 failed (of 3)" in out
    assert Image.objects.filter(project=project).count() == 2


def test_import_images_from_an_archive_and_a_single_file(project, tmp_path):
    archive = tmp_path / "set.tar.gz"
    single = tmp_path / "single.webp"
    single.write_bytes(image_bytes("WEBP", seed=3))
    src = tmp_path / "x.jpg"
    src.write_bytes(jpeg_bytes(seed=4))
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="inside/x.jpg")
    out, _ = run("import_images", str(project.pk), str(archive), str(single))
    assert out.count("1 imported, 0 duplicate(s), 0 failed (of 1)") == 2
    assert ImageImport.objects.filter(project=project, source=ImageImport.Source.ARCHIVE).exists()


def test_import_images_from_a_url_list(project, http_server, settings, tmp_path):
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    http_server.routes["/a.jpg"] = (200, {}, jpeg_bytes(seed=5))
    urls = tmp_path / "urls.txt"
    urls.write_text(f"# my photos\n{http_server.url('/a.jpg')}\n\n{http_server.url('/missing.jpg')}\n")
    out, _ = run("import_images", str(project.pk), urls=[str(urls)])
    assert "1 imported, 0 duplicate(s), 1 failed (of 2)" in out
    assert f"{http_server.url('/missing.jpg')}: the server answered HTTP 404 Not Found" in out


def test_exit_code_is_non_zero_only_when_nothing_could_be_read(project, tmp_path, write):
    with pytest.raises(CommandError, match="Nothing could be read"):
        run("import_images", str(project.pk), str(tmp_path / "missing-folder"))
    write("bad.jpg", b"text")
    with pytest.raises(CommandError, match="Nothing could be read"):
        run("import_images", str(project.pk), str(write.folder))
    write("good.jpg", jpeg_bytes(seed=6))
    out, _ = run("import_images", str(project.pk), str(write.folder))  # one good file is enough
    assert "1 imported" in out


def test_unknown_project_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="No project with the id or name 'nope'"):
        run("import_images", "nope", str(tmp_path))


def test_import_categories_from_coco_json_and_coco_80(project, tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [], "categories": [{"id": 91, "name": "drone", "supercategory": "sky"}]}))
    out, _ = run("import_categories", str(project.pk), str(path), coco=True)
    assert "COCO's categories: 80 added, 0 already there." in out
    assert "instances.json: 1 categories added, 0 already there." in out
    assert Category.objects.filter(project=project).count() == 81
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps([{"id": 1, "name": "human"}]))
    with pytest.raises(CommandError, match="Category id 1 is already 'person'"):
        run("import_categories", str(project.pk), str(clash))


def test_load_demo_is_idempotent():
    admin = UserFactory(username="admin", superuser=True)
    out, err = run("load_demo", owner="admin")
    assert err == ""
    project = Project.objects.get(name="Demo: everyday photos", owner=admin)
    assert "80 categories and 5 photos added" in out
    assert project.categories.count() == 80
    images = {i.original_name: i for i in project.images.all()}
    assert set(images) == {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png"}
    manifest = json.loads((__import__("pathlib").Path("datasets/demo/photos.json")).read_text())
    for photo in manifest["photos"]:
        image = images[photo["file"]]
        assert (image.license, image.attribution, image.source_url) == (photo["license"], photo["attribution"], photo["source_url"])
    assert images["chelsea.png"].width == 451 and images["chelsea.png"].height == 300
    state = (Project.objects.count(), Category.objects.count(), Image.objects.count(), ImageImport.objects.count())

    out, _ = run("load_demo", owner="admin")
    assert "already loaded" in out
    assert (Project.objects.count(), Category.objects.count(), Image.objects.count(), ImageImport.objects.count()) == state


def test_load_demo_needs_the_owner():
    with pytest.raises(CommandError, match="No user 'ghost'"):
        run("load_demo", owner="ghost")
