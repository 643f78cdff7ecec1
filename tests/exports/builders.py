"""Small synthetic projects written straight into the database and storage (no crowd pipeline).

Images are JPEGs (and a PNG) drawn by Pillow and saved through Django's default storage with the
Image row's sha256, size and format; outlines are accepted Polygons with real geometry.
"""
from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from PIL import Image as PILImage, ImageDraw

from datasets.models import Category, Image, ImageLabel, InstancePoint, Membership, Polygon, Project, Stage
from datasets.services.geometry import outline_check


def jpeg_bytes(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
    rng = random.Random(seed)
    img = PILImage.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        draw.ellipse([x0, y0, x0 + rng.randrange(10, 80), y0 + rng.randrange(10, 80)],
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def add_image(project: Project, data: bytes, *, width: int, height: int, fmt: str = "JPEG", name: str = "img",
              license: str = "", attribution: str = "") -> Image:
    digest = hashlib.sha256(data).hexdigest()
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    image = Image(project=project, width=width, height=height, format=fmt, file_size=len(data), sha256=digest,
                  original_name=f"{name}.{ext}", license=license, attribution=attribution)
    image.file.save(f"{digest}.{ext}", ContentFile(data), save=False)
    image.save()
    return image


def add_polygon(image: Image, category: Category, parts, *, status=Polygon.Status.ACCEPTED, is_crowd=False,
                confidence=None, stage=Stage.VERIFICATION, point=None) -> Polygon:
    outline = outline_check(parts=parts, width=image.width, height=image.height)
    return Polygon.objects.create(image=image, category=category, stage=stage, made_by="w1", parts=outline.parts,
                                  area=outline.area, bbox=outline.bbox, is_crowd=is_crowd, status=status,
                                  confidence=confidence, point=point)


@dataclass
class Built:
    project: Project
    owner: object
    categories: list[Category]
    images: list[Image] = field(default_factory=list)
    accepted: int = 0


def build_project(*, n_images: int = 12, owner=None, name: str = "Cats and dogs", seed: int = 0,
                  with_png: bool = True) -> Built:
    User = get_user_model()
    owner = owner or User.objects.create_user(f"owner-{name.replace(' ', '-')}-{seed}")
    project = Project.objects.create(name=name, owner=owner)
    cats = [
        Category.objects.create(project=project, coco_id=17, name="cat", supercategory="animal"),
        Category.objects.create(project=project, coco_id=18, name="dog", supercategory="animal"),
        Category.objects.create(project=project, coco_id=3, name="car", supercategory="vehicle"),
    ]
    built = Built(project=project, owner=owner, categories=cats)
    rng = random.Random(seed)
    for i in range(n_images):
        w, h = rng.choice([(64, 48), (80, 60), (48, 64)])
        fmt = "PNG" if (with_png and i == 1) else "JPEG"
        img = add_image(project, jpeg_bytes(w, h, seed * 1000 + i, fmt), width=w, height=h, fmt=fmt, name=f"img{i}",
                        license="CC-BY 4.0" if i % 2 else "", attribution=f"Photographer {i}")
        built.images.append(img)
        cat = cats[i % 2]
        # An aggregated label and click for every image; exactly one label when i % 3 != 0.
        ImageLabel.objects.create(image=img, category=cat, stage=Stage.AGGREGATE, made_by="aggregate", present=True,
                                  confidence=0.9)
        if i % 3 == 0:
            ImageLabel.objects.create(image=img, category=cats[2], stage=Stage.AGGREGATE, made_by="aggregate",
                                      present=True, confidence=0.4)
        point = InstancePoint.objects.create(image=img, category=cat, stage=Stage.AGGREGATE, made_by="aggregate",
                                             x=w / 2, y=h / 2, confidence=0.8)
        add_polygon(img, cat, [[2, 2, w / 2, 3, w / 3, h / 2]], point=point, confidence=0.95)
        built.accepted += 1
        add_polygon(img, cat, [[w / 2, h / 2, w - 2, h / 2, w - 2, h - 2, w / 2, h - 2],
                               [1, h - 10, 8, h - 10, 4, h - 2]], confidence=0.5)
        built.accepted += 1
        if i % 4 == 0:  # a crowd region, exported as RLE
            add_polygon(img, cats[2], [[10, 10, 30, 10, 30, 30, 10, 30]], is_crowd=True)
            built.accepted += 1
        add_polygon(img, cat, [[5, 5, 9, 5, 9, 9]], status=Polygon.Status.PENDING)
        add_polygon(img, cat, [[5, 5, 9, 5, 9, 9]], status=Polygon.Status.REJECTED)
    return built


def share(project: Project, role: str, username: str):
    User = get_user_model()
    user = User.objects.create_user(username)
    Membership.objects.create(project=project, user=user, role=role)
    return user
