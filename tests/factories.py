"""factory_boy factories for the models every part of the suite needs.

``ImageFactory`` stores a real, small PNG (each one different, so ``sha256`` is unique per image)
in the default storage; pass ``width``/``height`` to get an image of that size, or ``color``.

    user = UserFactory()
    project = ProjectFactory(owner=user)
    CategoryFactory(project=project, name="cat")
    image = ImageFactory(project=project, width=640, height=480)
"""
from __future__ import annotations

import hashlib
import io

import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from factory.django import DjangoModelFactory

from datasets.models import Category, Image, ImageImport, Membership, Project


def png_bytes(width: int = 32, height: int = 24, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real PNG of one colour."""
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password("password")

    class Params:
        superuser = factory.Trait(is_staff=True, is_superuser=True)


class ProjectFactory(DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    description = "A project made by the tests."
    owner = factory.SubFactory(UserFactory)


class MembershipFactory(DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.REQUESTER


class CategoryFactory(DjangoModelFactory):
    class Meta:
        model = Category

    project = factory.SubFactory(ProjectFactory)
    coco_id = factory.Sequence(lambda n: n + 1)
    name = factory.Sequence(lambda n: f"category {n}")
    supercategory = "thing"


class ImageImportFactory(DjangoModelFactory):
    class Meta:
        model = ImageImport

    project = factory.SubFactory(ProjectFactory)
    source = ImageImport.Source.UPLOAD


class ImageFactory(DjangoModelFactory):
    """An Image row with a real stored PNG whose bytes match ``sha256``, ``file_size`` and size."""

    class Meta:
        model = Image
        exclude = ("content", "color")

    project = factory.SubFactory(ProjectFactory)
    width = 32
    height = 24
    color = factory.Sequence(lambda n: ((n * 37) % 256, (n * 91) % 256, (n * 53 + n // 256) % 256))
    content = factory.LazyAttribute(lambda o: png_bytes(o.width, o.height, o.color))
    format = "PNG"
    exif_orientation = 1
    original_name = factory.Sequence(lambda n: f"image-{n}.png")
    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(o.content).hexdigest())
    file_size = factory.LazyAttribute(lambda o: len(o.content))
    file = factory.LazyAttribute(lambda o: ContentFile(o.content, name=f"{o.sha256}.png"))

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # The storage path uses project_id and sha256, so the row's fields are set before saving.
        file = kwargs.pop("file")
        obj = model_class(*args, **kwargs)
        obj.file.save(file.name, file, save=False)
        obj.save()
        return obj
