"""Download an export: ``python -m datasets.client download --url BASE --token T --project P
--export N --to DIR``.

Needs only the standard library (urllib) and, for the progress bar, tqdm; Django is never
imported, so researchers can run it anywhere. Each file is written to ``NAME.part``; an
interrupted download resumes with ``Range`` (and ``If-Range`` on the file's ETag, so a changed
file starts over), is checked against the manifest's sha256, and only then renamed. Files already
complete and correct are skipped, so running the command again finishes what is missing.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

CHUNK = 1 << 20
USER_AGENT = "annotator-client/1"


class ClientError(Exception):
    """A problem the user can act on; its message is printed without a traceback."""


def _bar(total: int, initial: int, desc: str, quiet: bool):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=True, file=sys.stderr)


class ExportClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 60.0, quiet: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.quiet = quiet
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    # -- HTTP -----------------------------------------------------------------------------

    def _request(self, url: str, headers: dict[str, str] | None = None):
        if not url.startswith(("http://", "https://")):
            url = self.base + url
        req = urllib.request.Request(url, headers={"Authorization": f"Token {self.token}", "User-Agent": USER_AGENT,
                                                   **(headers or {})})
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                return exc
            raise ClientError(self._explain(exc, url)) from None
        except urllib.error.URLError as exc:
            raise ConnectionError(f"cannot reach {url}: {exc.reason}") from exc

    @staticmethod
    def _explain(exc: urllib.error.HTTPError, url: str) -> str:
        message = ""
        try:
            body = json.loads(exc.read() or b"{}")
            message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
        except (ValueError, OSError):
            pass
        hint = {
            401: "the server refused the token (is it right, and not revoked or expired?)",
            403: "your role in this project does not allow this",
            404: "no such project or export for this token (or it is not shared with you)",
            409: "the export is not finished",
            429: "too many requests; wait a minute and run the command again",
        }.get(exc.code, "")
        parts = [f"HTTP {exc.code} for {url}", hint, message]
        return ": ".join(p for p in parts if p)

    def get_json(self, path: str) -> Any:
        with self._request(path) as resp:
            return json.loads(resp.read())

    # -- Downloading ----------------------------------------------------------------------

    def download(self, *, project: int, export: int, to: Path, only: list[str] | None = None,
                 retries: int = 5) -> list[Path]:
        info = self.get_json(f"/api/v1/projects/{project}/exports/{export}/")
        if info.get("status") != "done":
            pct = info.get("progress", {}).get("percent", 0)
            raise ClientError(f"export {export} of project {project} is {info.get('status')} ({pct}%); "
                              "download it once it is done")
        files = {f["name"]: f for f in info.get("files", [])}
        if "manifest.json" not in files:
            raise ClientError("the export lists no manifest.json")
        to.mkdir(parents=True, exist_ok=True)
        done = [self._fetch(files["manifest.json"], to, retries)]
        manifest = json.loads(done[0].read_bytes())
        wanted = manifest["files"]
        if only:
            wanted = [f for f in wanted if any(fnmatch.fnmatch(f["name"], pat) for pat in only)]
        for entry in wanted:
            listed = files.get(entry["name"])
            if listed is None or listed["sha256"] != entry["sha256"]:
                raise ClientError(f"{entry['name']}: the manifest and the server's file list disagree")
            done.append(self._fetch({**entry, "url": listed["url"]}, to, retries))
        return done

    def _fetch(self, entry: dict[str, Any], to: Path, retries: int) -> Path:
        name = entry["name"]
        final = (to / name).resolve()
        if to.resolve() not in final.parents:
            raise ClientError(f"refusing a file name that leaves the target folder: {name!r}")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and final.stat().st_size == entry["size"] and _sha256(final) == entry["sha256"]:
            return final
        part = final.with_name(final.name + ".part")
        attempt = 0
        while True:
            try:
                self._fetch_once(entry, part)
                break
            except (OSError, http.client.HTTPException) as exc:  # connection lost, timed out, cut short
                attempt += 1
                if attempt > retries:
                    raise ClientError(f"{name}: gave up after {retries} retries ({exc}); run the command "
                                      "again to resume") from None
                wait = min(30.0, 0.5 * 2 ** attempt)
                self.log(f"{name}: {exc}; resuming in {wait:.1f}s")
                time.sleep(wait)
        actual = _sha256(part)
        if actual != entry["sha256"]:
            part.unlink()
            raise ClientError(f"{name}: checksum mismatch (got sha256 {actual}, the manifest says "
                              f"{entry['sha256']}); the partial file was removed, run the command again")
        os.replace(part, final)
        return final

    def _fetch_once(self, entry: dict[str, Any], part: Path) -> None:
        size = entry["size"]
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            return
        headers = {}
        if have:
            headers = {"Range": f"bytes={have}-", "If-Range": f'"{entry["sha256"]}"'}
            self.log(f"{entry['name']}: resuming at {have} of {size} bytes")
        resp = self._request(entry["url"], headers)
        with resp:
            status = getattr(resp, "status", None) or resp.getcode()
            if status == 416:
                part.unlink(missing_ok=True)
                raise ConnectionError("the server refused the range; starting over")
            mode = "ab" if status == 206 else "wb"
            if status != 206:
                have = 0
            bar = _bar(size, have, entry["name"], self.quiet)
            try:
                with open(part, mode) as out:
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                        if bar is not None:
                            bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
        got = part.stat().st_size
        if got < size:
            raise ConnectionError(f"the connection ended at {got} of {size} bytes")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.client", description="Annotator's export client.")
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download an export, resuming and checking every file")
    dl.add_argument("--url", required=True, help="the server, e.g. https://annotator.example.org")
    dl.add_argument("--token", default=os.environ.get("ANNOTATOR_TOKEN"),
                    help="an API token (or set ANNOTATOR_TOKEN)")
    dl.add_argument("--project", type=int, required=True)
    dl.add_argument("--export", type=int, required=True, help="the export's number")
    dl.add_argument("--to", type=Path, required=True, help="the folder to write into")
    dl.add_argument("--only", action="append", help="only files matching this pattern (repeatable), "
                                                    "e.g. 'shards/train-*'")
    dl.add_argument("--retries", type=int, default=5)
    dl.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token is required (or set ANNOTATOR_TOKEN)")
    client = ExportClient(args.url, args.token, quiet=args.quiet)
    try:
        paths = client.download(project=args.project, export=args.export, to=args.to, only=args.only,
                                retries=args.retries)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"{len(paths)} files in {args.to}, all checked against the manifest", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
