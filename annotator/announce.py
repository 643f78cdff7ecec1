"""Telling Celery tasks about new ids (a stored answer, for the pipeline), coalesced through Redis.

One Celery message per answer cost the web tier about a millisecond of CPU per answer (building
and publishing the message), and the worker as much again to receive it. With Redis as the
cache (``CACHE_URL``), ``announce(name, id)`` adds the id to a Redis set kept for that task
name and, only when no drain is pending (a flag set with ``NX``), sends one
``annotator.drain_announced`` message to run ``ANNOUNCE_DELAY_SECONDS`` later; all in one round
trip. So a task name gets at most one message per delay, however fast answers come, and an
answer waits at most about that long. The drain, in a Celery worker, takes the ids out of the
set in batches and runs the task's body for each, in order; when the set is empty it lowers the
flag and looks once more, so an id announced meanwhile is either taken by this drain or raises
the flag again and gets a drain of its own: none waits for the next answer.

Without Redis (the embedded defaults) each id is one Celery message, as before. What fails:
- Redis unreachable at announce: the id goes as its own Celery message (which fails too if the
  broker is the same Redis; that is logged and the listener's catch-up finds the work);
- a drain message lost, or a drain killed after taking ids: the flag expires after
  ``ANNOUNCE_FLAG_SECONDS`` and the next answer asks for a drain again; ids taken by a killed
  drain are found by the listener's own catch-up (for the pipeline, beat's
  ``crowd.pipeline_catch_up``), as a lost message would be;
- the task's body raising for one id: the ids of the batch not yet done go back into the set and
  the drain is retried with Celery's backoff.
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

log = logging.getLogger(__name__)

BATCH = 100


def _redis():
    """The cache's Redis client, or None when the cache is not Redis."""
    from django.core.cache import caches

    from annotator.cache import RedisCache

    cache = caches["default"]
    if not isinstance(cache, RedisCache) or not getattr(settings, "ANNOUNCE_COALESCE", True):
        return None
    return cache._cache.get_client(write=True)


def _keys(name: str) -> tuple[str, str]:
    return f"announce:{name}:ids", f"announce:{name}:flag"


# Add the id, then raise the flag unless it is up: one command for redis-py to send and parse
# (a pipeline of two cost the web tier twice as much per answer). Returns 1 if it raised it.
_ANNOUNCE_LUA = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""
_script = None


def _announce_script(client):
    global _script
    if _script is None:
        _script = client.register_script(_ANNOUNCE_LUA)
    return _script


def announce(name: str, ident: int) -> None:
    """Run the Celery task ``name`` for ``ident`` soon (at least once, in a worker)."""
    from celery import current_app

    client = _redis()
    if client is not None:
        ids, flag = _keys(name)
        try:
            raised = _announce_script(client)(keys=[ids, flag], args=[ident, settings.ANNOUNCE_FLAG_SECONDS],
                                              client=client)
        except Exception as exc:  # noqa: BLE001 - fall back to one message of its own
            log.warning("could not add %s to the Redis set of %s (%s); sending a message", ident, name, exc)
        else:
            if raised:  # no drain pending: ask for one, a little later, for what comes meanwhile
                current_app.send_task("annotator.drain_announced", args=[name], retry=False,
                                      countdown=settings.ANNOUNCE_DELAY_SECONDS)
            return
    task = current_app.tasks.get(name)
    if task is not None:
        task.apply_async(args=[ident], retry=False)
    else:
        current_app.send_task(name, args=[ident], retry=False)


@shared_task(name="annotator.drain_announced", bind=True, acks_late=True, max_retries=12,
             retry_backoff=5, retry_backoff_max=600)
def drain_announced(self, name: str) -> dict:
    """Run the task ``name`` for every id announced to it (see the module's docstring)."""
    from celery import current_app

    client = _redis()
    task = current_app.tasks[name]
    if client is None:
        return {"done": 0}
    ids, flag = _keys(name)
    done = 0
    while True:
        batch = sorted({int(i) for i in client.spop(ids, BATCH) or []})
        if not batch:
            client.delete(flag)  # from here, a new id raises the flag again and gets its own drain
            if client.scard(ids) == 0:  # and one announced before that is still taken here
                return {"done": done}
            continue
        for position, ident in enumerate(batch):
            try:
                task.run(ident)
            except Exception as exc:
                client.sadd(ids, *batch[position:])
                raise self.retry(exc=exc)
            done += 1
