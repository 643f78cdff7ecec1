"""The ingestion service on real files: every refusal names the file and the reason, and the good
files of the same import are imported."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import Image, ImageImport
from datasets.services import ingest
from datasets.services.ingest import image_inspect, images_import, report_message, source_for_path
from datasets.services.ingest_sources import Refused, source_archive, source_folder, source_uploads
from tests.datasets.conftest import entry_for, image_bytes, jpeg_bytes, png_claiming, truncated_jpeg

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


def run_folder(project, folder: Path, **kwargs) -> ImageImport:
    return images_import(project=project, source=source_folder(folder), **kwargs)


def assert_failed(result: ImageImport, name: str, *fragments: str) -> str:
    entry = entry_for(result.report, name)
    assert entry["status"] == "failed", entry
    message = report_message(entry)
    assert message.startswith(f"{name}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def assert_imported(result: ImageImport, name: str) -> Image:
    entry = entry_for(result.report, name)
    assert entry["status"] == "imported", entry
    return Image.objects.get(pk=entry["image"])


def stored_files(project) -> list[str]:
    root = Path(default_storage.path(f"projects/{project.pk}/images"))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_good_files_are_imported_with_original_bytes_and_metadata(project, write):
    jpg = write("a.jpg", jpeg_bytes(64, 48, seed=1))
    write("b.png", image_bytes("PNG", 40, 30, seed=2))
    result = run_folder(project, write.folder, license="CC0 1.0", attribution="The tests")
    assert result.status == ImageImport.Status.DONE
    assert (result.total, result.imported, result.duplicates, result.failed) == (2, 2, 0, 0)
    image = assert_imported(result, "a.jpg")
    assert (image.width, image.height, image.format, image.exif_orientation) == (64, 48, "JPEG", 1)
    assert image.sha256 == hashlib.sha256(jpg.read_bytes()).hexdigest()
    assert image.file_size == jpg.stat().st_size
    with image.file.open("rb") as f:
        assert f.read() == jpg.read_bytes()  # never re-encoded
    assert image.file.name.endswith(f"{image.sha256}.jpg")
    assert (image.license, image.attribution, image.imported_by_id) == ("CC0 1.0", "The tests", result.pk)
    assert assert_imported(result, "b.png").format == "PNG"
    assert result.finished_at is not None


def test_truncated_jpeg_is_refused_and_the_good_file_imported(project, write):
    write("good.jpg", jpeg_bytes(seed=3))
    write("broken.jpg", truncated_jpeg())
    result = run_folder(project, write.folder)
    assert_failed(result, "broken.jpg", "damaged or truncated JPEG file", "truncated")
    assert_imported(result, "good.jpg")
    assert Image.objects.filter(project=project).count() == 1
    assert len(stored_files(project)) == 1


def test_png_claiming_50000_by_50000_is_refused_from_its_header_without_decoding(project, write):
    write("huge.png", png_claiming(50_000, 50_000))
    write("fine.png", image_bytes("PNG", seed=4))
    tracemalloc.start()
    try:
        result = run_folder(project, write.folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = assert_failed(result, "huge.png")
    assert message == "huge.png: 2,500,000,000 pixels is over the limit of 100,000,000 (50000x50000)"
    assert_imported(result, "fine.png")
    # 2.5 billion RGB pixels would be 7.5 GB: nothing close to that was ever allocated.
    assert peak < 50 * 1024 * 1024


def test_pixel_limit_comes_from_settings(project, write, settings):
    settings.INGEST_MAX_IMAGE_PIXELS = 1000
    write("big.jpg", jpeg_bytes(64, 48, seed=5))
    write("small.jpg", jpeg_bytes(20, 20, seed=6))
    result = run_folder(project, write.folder)
    assert_failed(result, "big.jpg", "3,072 pixels is over the limit of 1,000")
    assert_imported(result, "small.jpg")


def test_a_text_file_named_jpg_is_not_an_image(project, write):
    write("cat.jpg", b"this is a text file, not a photo of a cat\n")
    write("dog.jpg", jpeg_bytes(seed=7))
    result = run_folder(project, write.folder)
    assert assert_failed(result, "cat.jpg") == "cat.jpg: not an image (cannot identify image file)"
    assert_imported(result, "dog.jpg")


@pytest.mark.parametrize(
    ("name", "fmt", "label"),
    [("anim.gif", "GIF", "GIF"), ("scan.tiff", "TIFF", "TIFF"), ("old.bmp", "BMP", "BMP")],
)
def test_other_formats_are_refused_by_name(project, write, name, fmt, label):
    write(name, image_bytes(fmt, seed=8))
    write("ok.png", image_bytes("PNG", seed=9))
    result = run_folder(project, write.folder)
    assert assert_failed(result, name) == f"{name}: {label} images are not accepted (only JPEG, PNG and WebP)"
    assert_imported(result, "ok.png")


def test_svg_is_refused(project, write):
    write("logo.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    write("ok.png", image_bytes("PNG", seed=10))
    result = run_folder(project, write.folder)
    assert assert_failed(result, "logo.svg") == "logo.svg: SVG images are not accepted (only JPEG, PNG and WebP)"
    assert_imported(result, "ok.png")


def test_webp_is_accepted(project, write):
    write("photo.webp", image_bytes("WEBP", 50, 20, seed=11))
    result = run_folder(project, write.folder)
    image = assert_imported(result, "photo.webp")
    assert (image.format, image.width, image.height) == ("WEBP", 50, 20)
    assert image.file.name.endswith(".webp")


def test_exif_orientation_6_swaps_width_and_height_and_keeps_the_bytes(project, write):
    data = jpeg_bytes(60, 40, seed=12, exif_orientation=6)
    write("rotated.jpg", data)
    write("upright.jpg", jpeg_bytes(60, 40, seed=13))
    result = run_folder(project, write.folder)
    rotated = assert_imported(result, "rotated.jpg")
    assert (rotated.width, rotated.height, rotated.exif_orientation) == (40, 60, 6)
    with rotated.file.open("rb") as f:
        assert f.read() == data
    upright = assert_imported(result, "upright.jpg")
    assert (upright.width, upright.height, upright.exif_orientation) == (60, 40, 1)


def test_oversized_file_is_refused_before_it_is_read(project, write, settings):
    settings.INGEST_MAX_FILE_BYTES = 20_000
    big = jpeg_bytes(300, 300, seed=14)
    assert len(big) > 20_000
    write("big.jpg", big)
    write("small.jpg", jpeg_bytes(20, 20, seed=15))
    result = run_folder(project, write.folder)
    assert_failed(result, "big.jpg", f"{len(big):,} bytes is over the limit of 20,000 bytes")
    assert_imported(result, "small.jpg")


def test_the_same_image_twice_is_one_image_and_one_duplicate_and_a_rerun_adds_nothing(project, write):
    data = jpeg_bytes(seed=16)
    write("one.jpg", data)
    write("two.jpg", data)
    write("other.png", image_bytes("PNG", seed=17))
    first = run_folder(project, write.folder)
    image = assert_imported(first, "one.jpg")
    duplicate = entry_for(first.report, "two.jpg")
    assert duplicate["status"] == "duplicate" and duplicate["image"] == image.pk
    assert report_message(duplicate) == f"two.jpg: already in the project as image #{image.pk} (one.jpg)"
    assert (first.imported, first.duplicates, first.failed) == (2, 1, 0)
    files_before = stored_files(project)

    again = run_folder(project, write.folder)
    assert (again.imported, again.duplicates, again.failed) == (0, 3, 0)
    assert Image.objects.filter(project=project).count() == 2
    assert stored_files(project) == files_before


def test_same_bytes_may_be_in_two_projects(project, write):
    from tests.factories import ProjectFactory

    write("a.jpg", jpeg_bytes(seed=18))
    other = ProjectFactory()
    assert run_folder(project, write.folder).imported == 1
    assert run_folder(other, write.folder).imported == 1


def test_a_file_whose_row_cannot_be_saved_leaves_no_stored_file(project, write, monkeypatch):
    write("a.jpg", jpeg_bytes(seed=19))
    write("b.jpg", jpeg_bytes(seed=20))
    original_save = Image.save

    def failing_save(self, *args, **kwargs):
        if self.original_name == "a.jpg":
            raise RuntimeError("the database went away")
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(Image, "save", failing_save)
    result = run_folder(project, write.folder)
    assert_failed(result, "a.jpg", "could not be saved", "the database went away")
    b = assert_imported(result, "b.jpg")
    assert stored_files(project) == [str(Path(b.file.name).relative_to(f"projects/{project.pk}/images"))]


def test_empty_file_is_refused(project, write):
    write("empty.jpg", b"")
    write("ok.jpg", jpeg_bytes(seed=21))
    result = run_folder(project, write.folder)
    assert assert_failed(result, "empty.jpg") == "empty.jpg: an empty file"
    assert_imported(result, "ok.jpg")


def test_symlink_in_a_folder_is_reported_not_followed(project, write, tmp_path):
    secret = tmp_path / "outside.jpg"
    secret.write_bytes(jpeg_bytes(seed=22))
    os.symlink(secret, write.folder / "link.jpg")
    write("ok.jpg", jpeg_bytes(seed=23))
    result = run_folder(project, write.folder)
    assert_failed(result, "link.jpg", "a symbolic link")
    assert_imported(result, "ok.jpg")


def test_folder_skips_system_junk_and_walks_subfolders(project, write):
    write("sub/deep/a.jpg", jpeg_bytes(seed=24))
    write(".DS_Store", b"junk")
    write("__MACOSX/._a.jpg", b"junk")
    result = run_folder(project, write.folder)
    assert [e["name"] for e in result.report] == ["sub/deep/a.jpg"]
    assert assert_imported(result, "sub/deep/a.jpg").original_name == "a.jpg"


def test_missing_folder_fails_the_import_with_its_reason(project, tmp_path):
    result = run_folder(project, tmp_path / "nowhere")
    assert result.status == ImageImport.Status.FAILED
    assert "nowhere: not a folder on this server" in result.error


def test_uploaded_files(project):
    files = [
        SimpleUploadedFile("up1.jpg", jpeg_bytes(seed=25), content_type="image/jpeg"),
        SimpleUploadedFile("up2.png", image_bytes("PNG", seed=26), content_type="image/png"),
        SimpleUploadedFile("notes.jpg", b"plain text", content_type="image/jpeg"),
    ]
    result = images_import(project=project, source=source_uploads(files))
    assert result.source == ImageImport.Source.UPLOAD
    assert_imported(result, "up1.jpg")
    assert_imported(result, "up2.png")
    assert_failed(result, "notes.jpg", "not an image")


def test_counters_and_report_are_written_in_batches(project, write, monkeypatch):
    for i in range(7):
        write(f"{i}.jpg", jpeg_bytes(16, 16, seed=100 + i))
    monkeypatch.setattr(ingest, "REPORT_BATCH", 3)
    monkeypatch.setattr(ingest, "REPORT_SECONDS", 3600)
    seen_in_db = []

    def progress(entry):
        row = ImageImport.objects.filter(status=ImageImport.Status.RUNNING).values("total", "imported").first()
        seen_in_db.append(row["total"] if row else None)

    result = run_folder(project, write.folder, progress=progress)
    # Written after the 3rd and 6th file, not after each one; the end writes the rest.
    assert seen_in_db == [0, 0, 3, 3, 3, 6, 6]
    assert (result.total, result.imported) == (7, 7)
    assert ImageImport.objects.get(pk=result.pk).imported == 7


# --- Archives ------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_with_dotdot_path_is_refused_and_good_members_imported(project, tmp_path):
    archive = make_zip(tmp_path / "photos.zip", {
        "../evil.jpg": jpeg_bytes(seed=30),
        "photos/good.jpg": jpeg_bytes(seed=31),
    })
    result = images_import(project=project, source=source_archive(archive))
    assert result.source == ImageImport.Source.ARCHIVE
    assert assert_failed(result, "../evil.jpg") == "../evil.jpg: unsafe path in the archive (it climbs out with '..')"
    assert_imported(result, "photos/good.jpg")
    assert not (tmp_path / "evil.jpg").exists()
    assert Image.objects.filter(project=project).count() == 1


def test_zip_with_absolute_path_is_refused(project, tmp_path):
    archive = tmp_path / "abs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("/etc/evil.jpg")
        zf.writestr(info, jpeg_bytes(seed=32))
        zf.writestr("good.jpg", jpeg_bytes(seed=33))
    result = images_import(project=project, source=source_archive(archive))
    assert assert_failed(result, "/etc/evil.jpg") == "/etc/evil.jpg: unsafe path in the archive (an absolute path)"
    assert_imported(result, "good.jpg")


def test_zip_symlink_member_is_refused(project, tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("good.jpg", jpeg_bytes(seed=34))
    result = images_import(project=project, source=source_archive(archive))
    assert_failed(result, "link.jpg", "a symbolic link in the archive")
    assert_imported(result, "good.jpg")


def add_tar_member(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_symlinks_hardlinks_devices_and_absolute_paths_are_refused(project, tmp_path, mode):
    archive = tmp_path / ("photos.tar" if mode == "w" else "photos.tar.gz")
    with tarfile.open(archive, mode) as tf:
        add_tar_member(tf, "good.jpg", jpeg_bytes(seed=35))
        add_tar_member(tf, "sym.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_tar_member(tf, "hard.jpg", type=tarfile.LNKTYPE, linkname="good.jpg")
        add_tar_member(tf, "dev.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add_tar_member(tf, "/abs/evil.jpg", jpeg_bytes(seed=36))
        add_tar_member(tf, "a/../../up.jpg", jpeg_bytes(seed=37))
        add_tar_member(tf, "also-good.png", image_bytes("PNG", seed=38))
    result = images_import(project=project, source=source_archive(archive))
    assert assert_failed(result, "sym.jpg") == "sym.jpg: a symbolic link in the archive, not a regular file"
    assert assert_failed(result, "hard.jpg") == "hard.jpg: a hard link in the archive, not a regular file"
    assert assert_failed(result, "dev.jpg") == "dev.jpg: a device file in the archive, not a regular file"
    assert_failed(result, "/abs/evil.jpg", "an absolute path")
    assert_failed(result, "a/../../up.jpg", "'..'")
    assert_imported(result, "good.jpg")
    assert_imported(result, "also-good.png")
    assert (result.imported, result.failed) == (2, 5)


def test_zip_bomb_member_is_refused_by_its_compression_ratio(project, tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {
        "bomb.jpg": b"\0" * (20 * 1024 * 1024),  # 20 MB of zeros packs to about 20 KB
        "good.jpg": jpeg_bytes(seed=39),
    })
    assert archive.stat().st_size < 200_000
    result = images_import(project=project, source=source_archive(archive))
    assert_failed(result, "bomb.jpg", "suspicious compression ratio", "over the limit of 100 to 1", "zip bomb")
    assert_imported(result, "good.jpg")


def test_zip_with_too_many_members_is_refused_as_a_whole(project, tmp_path, settings):
    settings.INGEST_MAX_ARCHIVE_MEMBERS = 3
    archive = make_zip(tmp_path / "many.zip", {f"{i}.jpg": jpeg_bytes(8, 8, seed=40 + i) for i in range(4)})
    result = images_import(project=project, source=source_archive(archive))
    assert result.status == ImageImport.Status.FAILED
    assert result.error == "many.zip: 4 members is over the limit of 3"
    assert Image.objects.filter(project=project).count() == 0


def test_tar_over_the_member_limit_keeps_what_it_read(project, tmp_path, settings):
    settings.INGEST_MAX_ARCHIVE_MEMBERS = 2
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as tf:
        for i in range(4):
            add_tar_member(tf, f"{i}.jpg", jpeg_bytes(8, 8, seed=50 + i))
    result = images_import(project=project, source=source_archive(archive))
    assert result.status == ImageImport.Status.DONE
    assert result.imported == 2
    assert "more than 2 members, over the limit" in result.error
    assert result.report[-1]["status"] == "failed" and "many.tar" in report_message(result.report[-1])


def test_archive_total_uncompressed_limit(project, tmp_path, settings):
    members = {f"{i}.jpg": jpeg_bytes(64, 64, seed=60 + i) for i in range(3)}
    settings.INGEST_MAX_ARCHIVE_BYTES = sum(len(d) for d in members.values()) - 1
    result = images_import(project=project, source=source_archive(make_zip(tmp_path / "big.zip", members)))
    assert result.status == ImageImport.Status.FAILED
    assert "big.zip" in result.error and "uncompressed is over the limit" in result.error


def test_half_a_zip_is_one_bad_file_for_the_command_and_a_failed_archive_for_the_admin(project, tmp_path):
    whole = make_zip(tmp_path / "x.zip", {"a.jpg": jpeg_bytes(seed=70)}).read_bytes()
    bad = tmp_path / "broken.zip"
    bad.write_bytes(whole[: len(whole) // 2])
    # Half a zip has no central directory: neither a zip nor a tar.
    result = images_import(project=project, source=source_for_path(bad))
    assert (result.imported, result.failed) == (0, 1)
    assert_failed(result, "broken.zip", "not an image")
    result = images_import(project=project, source=source_archive(bad))
    assert result.status == ImageImport.Status.FAILED
    assert result.error == "broken.zip: not a zip or tar archive"


def test_a_zip_member_with_damaged_data_is_refused_and_the_others_imported(project, tmp_path):
    good, victim = jpeg_bytes(seed=73), jpeg_bytes(seed=74)
    data = bytearray(make_zip(tmp_path / "tmp.zip", {"good.jpg": good, "victim.jpg": victim}, compression=zipfile.ZIP_STORED).read_bytes())
    middle = len(victim) // 2
    at = data.find(victim[middle : middle + 20])
    data[at : at + 20] = bytes(20)
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    result = images_import(project=project, source=source_archive(tmp_path / "damaged.zip"))
    assert_failed(result, "victim.jpg", "cannot be read", "Bad CRC-32")
    assert_imported(result, "good.jpg")


def test_a_tar_cut_short_keeps_the_members_before_the_cut(project, tmp_path):
    archive = tmp_path / "cut.tar"
    with tarfile.open(archive, "w") as tf:
        add_tar_member(tf, "first.jpg", jpeg_bytes(seed=75))
        add_tar_member(tf, "second.jpg", jpeg_bytes(300, 200, seed=76))
    data = archive.read_bytes()
    archive.write_bytes(data[: data.find(b"second.jpg") + 512 + 3000])
    result = images_import(project=project, source=source_archive(archive))
    assert_imported(result, "first.jpg")
    assert_failed(result, "second.jpg", "cannot be read", "unexpected end of data")


def test_oversized_archive_member_is_refused_from_its_header(project, tmp_path, settings):
    settings.INGEST_MAX_FILE_BYTES = 10_000
    big = jpeg_bytes(200, 200, seed=71)
    archive = make_zip(tmp_path / "sizes.zip", {"big.jpg": big, "small.jpg": jpeg_bytes(8, 8, seed=72)}, compression=zipfile.ZIP_STORED)
    result = images_import(project=project, source=source_archive(archive))
    assert_failed(result, "big.jpg", f"{len(big):,} bytes is over the limit of 10,000 bytes")
    assert_imported(result, "small.jpg")


def test_image_inspect_refuses_an_empty_stream():
    with pytest.raises(Refused, match="an empty file"):
        image_inspect(fp=io.BytesIO(b""))


def test_a_lost_database_stops_a_staged_import_and_a_retry_finishes_it(project, tmp_path, monkeypatch):
    from django.core.files.storage import default_storage
    from django.db import OperationalError

    from datasets.services.ingest import image_import_run_staged, image_import_stage

    zipped = make_zip(tmp_path / "two.zip", {"a.jpg": jpeg_bytes(seed=80), "b.jpg": jpeg_bytes(seed=81)})
    upload = SimpleUploadedFile("two.zip", zipped.read_bytes())
    staged = image_import_stage(project=project, archive=upload)
    original_save = Image.save

    def lost_on_b(self, *args, **kwargs):
        if self.original_name == "b.jpg":
            raise OperationalError("server closed the connection unexpectedly")
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(Image, "save", lost_on_b)
    with pytest.raises(OperationalError):
        image_import_run_staged(image_import=staged)
    staged.refresh_from_db()
    assert staged.status == ImageImport.Status.RUNNING  # left for the retry
    assert default_storage.exists(f"imports/{staged.pk}/manifest.json")

    monkeypatch.setattr(Image, "save", original_save)
    result = image_import_run_staged(image_import=staged)
    assert result.status == ImageImport.Status.DONE
    assert [e["status"] for e in result.report] == ["duplicate", "imported"]
    assert Image.objects.filter(project=project).count() == 2
    assert not default_storage.exists(f"imports/{staged.pk}/manifest.json")
