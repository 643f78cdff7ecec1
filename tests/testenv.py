"""Loaded by pytest (``-p tests.testenv``) before Django starts: the environment of a test run.

Each run gets its own var/ folder (database file, media, broker folders), so that several runs
on one machine never share state.
"""
import os
import tempfile

os.environ.setdefault("ANNOTATOR_VAR_DIR", tempfile.mkdtemp(prefix="annotator-test-"))
# collectstatic never runs for tests (the live server serves the apps' static folders); an empty
# STATIC_ROOT keeps WhiteNoise from warning that it is missing whenever a request handler is built.
os.makedirs(os.path.join(os.environ["ANNOTATOR_VAR_DIR"], "static"), exist_ok=True)
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("DEBUG", "false")
# The live test server speaks plain HTTP on loopback.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("SERVE_MEDIA", "true")
# pytest-django's live_server runs in a thread beside Playwright's sync API.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# Suites make many quick requests from one address; tests/security sets low limits to test them.
for _name in ("RATELIMIT_LOGIN_IP", "RATELIMIT_LOGIN_USER", "RATELIMIT_SUBMIT_IP", "RATELIMIT_SUBMIT_WORKER"):
    os.environ.setdefault(_name, "100000/m")
