"""COCO's pipeline, run by the project itself: stages as data (:mod:`.chain`), per-item
decisions (:mod:`.decide`, pure) and the services that move items on (:mod:`.engine`).

Answers reach it through Celery: the tools announce ``crowd.pipeline_answer`` when an answer is
stored (``TOOLS_ANSWER_TASKS``; coalesced through Redis by ``annotator.announce``), and beat runs ``crowd.pipeline_catch_up`` in case a message was
lost or a worker died. See docs/pipeline.md.
"""
