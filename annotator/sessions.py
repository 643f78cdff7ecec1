"""Sessions read from Redis first and kept in PostgreSQL, working on when Redis is out of reach.

Django's ``cached_db`` engine saves every session to the database and to the cache, and reads
the cache first: a worker page then needs no session query. But three of its cache calls are
not guarded, so a Redis outage would turn worker pages into 503s where the database engine
keeps them working: the ``set`` that refills the cache after a miss, the membership test made
when a new session key is drawn, and the ``delete`` on logout. Here every cache call is
guarded: when Redis cannot be reached the session is read from, written to and deleted from the
database alone, exactly as the database engine does, and the error is logged.

What an outage can leave behind: a session deleted or changed while Redis was unreachable can
still be in Redis when it comes back (if Redis kept its data). That copy expires after
``SESSION_CACHE_SECONDS`` at most (default five minutes), not after the session's own age.
Signing out everywhere still works at once, because Django compares the session's password hash
with the user's row on every request. ``settings.SESSION_ENGINE`` names this module whenever
``CACHE_URL`` names Redis (a per-process memory cache could not be shared between workers).
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.sessions.backends import cached_db

from annotator.middleware import TRANSIENT

logger = logging.getLogger("django.contrib.sessions")


def _cache_seconds(expiry_age: int) -> int:
    return max(0, min(expiry_age, getattr(settings, "SESSION_CACHE_SECONDS", 300)))


class SessionStore(cached_db.SessionStore):
    cache_key_prefix = "annotator.sessions"

    def load(self):
        try:
            data = self._cache.get(self.cache_key)
        except Exception:  # as Django's: an unreachable cache or a key it refuses reads the database
            data = None
        if data is not None:
            return data
        s = self._get_session_from_db()
        if not s:
            return {}
        data = self.decode(s.session_data)
        self._cache_set(data, self.get_expiry_age(expiry=s.expire_date))
        return data

    def exists(self, session_key):
        if session_key:
            try:
                if (self.cache_key_prefix + session_key) in self._cache:
                    return True
            except TRANSIENT:
                logger.warning("Session cache unreachable; checking the database only", exc_info=True)
        return cached_db.DBStore.exists(self, session_key)

    def save(self, must_create=False):
        cached_db.DBStore.save(self, must_create)
        self._cache_set(self._session, self.get_expiry_age())

    def delete(self, session_key=None):
        cached_db.DBStore.delete(self, session_key)
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        try:
            self._cache.delete(self.cache_key_prefix + session_key)
        except TRANSIENT:
            logger.warning("Session cache unreachable; the session was deleted from the database only",
                           exc_info=True)

    def _cache_set(self, data, expiry_age: int) -> None:
        try:
            self._cache.set(self.cache_key, data, _cache_seconds(expiry_age))
        except Exception:  # as Django's: the database holds the session either way
            logger.warning("Session cache unreachable; the session is kept in the database only", exc_info=True)
