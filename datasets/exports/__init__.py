"""Versioned exports of a project's dataset: COCO JSON, WebDataset tar shards, ImageFolder.

``service`` builds an :class:`~datasets.models.Export` (run by the Celery task in ``tasks``);
``selection`` decides which images and annotations go in and into which split; one module per
format writes the files (``coco``, ``shards``, ``imagefolder``); ``manifest`` describes them.
"""
