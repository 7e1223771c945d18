"""HTTP download with resume, progress on stderr, Google Drive confirmation pages and checksums.

Standard library only (``urllib``). A download goes to ``<dest>.part`` and is renamed to ``dest`` only
after it is complete and its checksum (when pinned) matches, so a killed process never leaves a file
that looks complete. The next attempt resumes the ``.part`` file with an HTTP ``Range`` request; if the
server ignores the range (status 200) the download restarts from zero.

Google Drive answers a request for a large file with an HTML page ("can't scan this file for viruses")
that holds a download form (``id``, ``export``, ``confirm``, ``uuid`` fields) or, in older versions, a
link with a ``confirm=`` token or a ``download_warning`` cookie. ``confirmation_url`` turns that page
into the URL of the file. Any other HTML answer is an error (a weight file is never text/html).

Failures that a retry cannot fix within seconds (the host name does not resolve, the connection is
refused, the network is unreachable: in short, offline) end the attempts on that URL at once; the error
lists each URL once with its last failure.
"""
from __future__ import annotations

import errno
import hashlib
import html
import http.client
import http.cookiejar
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Sequence

from vidtriplane import __version__
from vidtriplane.errors import VidtriplaneError

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_HTML_BYTES = 4 << 20
MAX_CONFIRM_HOPS = 3
RETRY_BACKOFF_S = 0.5
USER_AGENT = f"vidtriplane/{__version__} (weights downloader; Python urllib)"
_RETRYABLE = (ConnectionError, http.client.IncompleteRead, http.client.RemoteDisconnected, socket.timeout,
              TimeoutError, urllib.error.URLError, OSError)
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


class DownloadError(VidtriplaneError, RuntimeError):
    """A download that could not be completed; the message says what to do next."""


class ChecksumMismatch(DownloadError):
    """The downloaded bytes do not match the pinned checksum (the bad file has been removed)."""


@dataclass(frozen=True)
class DownloadResult:
    """A finished, verified download."""

    path: Path
    """The final file."""
    url: str
    """The URL that delivered it (before any confirmation page)."""
    nbytes: int
    """Size in bytes."""
    sha256: str
    """sha256 of the file."""
    md5: str
    """md5 of the file."""


class _FormParser(HTMLParser):
    """Collects the forms of an HTML page: action URL and hidden/submit input fields."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, list[tuple[str, str]]]] = []
        self._current: tuple[str, list[tuple[str, str]]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._current = (a.get("action", ""), [])
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            if a.get("type", "text").lower() in ("hidden", "submit", "text"):
                self._current[1].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def confirmation_url(page: str, base_url: str, cookies: http.cookiejar.CookieJar | None = None) -> str | None:
    """The file URL behind a Google Drive "download anyway" page, or None when the page has none."""
    parser = _FormParser()
    parser.feed(page)
    for action, fields in parser.forms:
        if any(name == "confirm" for name, _ in fields):
            target = urllib.parse.urljoin(base_url, html.unescape(action) or base_url)
            query = urllib.parse.urlencode(fields)
            return f"{target}{'&' if '?' in target else '?'}{query}"
    link = re.search(r'href="([^"]*[?&](?:amp;)?confirm=[0-9A-Za-z_\-]+[^"]*)"', page)
    if link:
        return urllib.parse.urljoin(base_url, html.unescape(link.group(1)))
    for cookie in cookies or ():
        if cookie.name.startswith("download_warning"):
            parts = urllib.parse.urlsplit(base_url)
            query = urllib.parse.parse_qsl(parts.query) + [("confirm", cookie.value)]
            return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return None


def _html_error(url: str, page: str) -> str:
    text = page.lower()
    if "quota" in text or "too many users" in text:
        why = "Google Drive says the file's download quota is exceeded; try again in 24 h"
    else:
        why = "the server answered with an HTML page instead of the file"
    return f"{why} ({url})"


def _total_size(resp: http.client.HTTPResponse, offset: int) -> int | None:
    """Full size of the remote file from Content-Range (206) or Content-Length (200)."""
    if resp.status == 206:
        match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        length = resp.headers.get("Content-Length")
        return offset + int(length) if length else None
    length = resp.headers.get("Content-Length")
    return int(length) if length else None


class _Session:
    """One opener (with cookies) and the request logic shared by all attempts of a download."""

    def __init__(self, timeout: float) -> None:
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.timeout = timeout

    def open(self, url: str, offset: int) -> http.client.HTTPResponse:
        """GET ``url`` from byte ``offset``, following Drive confirmation pages; returns the file response."""
        for _ in range(MAX_CONFIRM_HOPS + 1):
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            resp = self.opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout)
            if resp.headers.get_content_type() != "text/html":
                return resp
            page = resp.read(MAX_HTML_BYTES).decode("utf-8", "replace")
            resp.close()
            next_url = confirmation_url(page, resp.geturl(), self.cookies)
            if next_url is None or next_url == url:
                raise DownloadError(_html_error(url, page))
            url = next_url
        raise DownloadError(f"too many confirmation pages from {url}")


def _fetch_into(session: _Session, url: str, part: Path, *, label: str, progress: bool) -> None:
    """One attempt: append the rest of ``url`` to ``part`` (or restart it); raise when incomplete."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = session.open(url, offset)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Range not satisfiable: the part is already whole, or is junk longer than the file.
            match = re.search(r"/(\d+)", err.headers.get("Content-Range", "") if err.headers else "")
            if match and int(match.group(1)) == offset:
                return
            part.unlink()
            raise ConnectionError("stale partial download discarded") from err
        raise
    with resp:
        if offset and resp.status == 206:
            start = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                resp.close()
                part.unlink()
                raise ConnectionError("server resumed at the wrong byte; restarting")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # status 200: the server ignored Range, start again
        total = _total_size(resp, offset)
        done = offset
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=label, file=sys.stderr, disable=not progress, leave=False) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
    if total is not None and done != total:
        raise http.client.IncompleteRead(b"", total - done)


def download(urls: Sequence[str], dest: Path, *, sha256: str | None = None, md5: str | None = None,
             retries: int = 3, timeout: float = 60.0, progress: bool = True, label: str = "") -> DownloadResult:
    """Download the first URL that works into ``dest`` (resuming ``dest.part``), verified and atomic.

    ``sha256`` may be a full digest or a prefix; when neither it nor ``md5`` is given, the sha256 is
    logged so it can be pinned. An unreachable host is not retried. On a checksum mismatch the bad file is deleted and
    ``ChecksumMismatch`` is raised; on a network failure the ``.part`` file is kept for resuming and
    ``DownloadError`` is raised.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    session = _Session(timeout)
    failures: dict[str, str] = {}  # url -> its last error
    for url in urls:
        for attempt in range(retries + 1):
            if attempt:
                log.info("retrying %s from byte %d (attempt %d/%d)", url, part.stat().st_size if part.exists() else 0,
                         attempt + 1, retries + 1)
            try:
                _fetch_into(session, url, part, label=label or dest.name, progress=progress)
                return _finish(part, dest, url, sha256=sha256, md5=md5, label=label)
            except urllib.error.HTTPError as err:
                failures[url] = f"HTTP {err.code} {err.reason}"
                if err.code < 500 and err.code != 429:
                    break
            except ChecksumMismatch:
                raise
            except DownloadError as err:
                failures[url] = str(err)
                break
            except _RETRYABLE as err:
                failures[url] = f"{type(err).__name__}: {getattr(err, 'reason', None) or err}"
                if unreachable(err):
                    break
            if attempt < retries:
                time.sleep(min(RETRY_BACKOFF_S * 2 ** attempt, 8.0))
    kept = f"\nThe partial file {part} is kept; run the same command again to resume." if part.exists() else ""
    listed = "\n  ".join(f"{url}: {why}" for url, why in failures.items())
    raise DownloadError(f"could not download {label or dest.name}:\n  {listed}{kept}")


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` says the host cannot be reached at all (no name resolution, refused, no route):
    retrying within seconds would not help."""
    reason = getattr(err, "reason", err)
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


def _finish(part: Path, dest: Path, url: str, *, sha256: str | None, md5: str | None,
            label: str = "") -> DownloadResult:
    """Check the completed ``part`` against the pinned checksums, then rename it to ``dest``."""
    h_sha, h_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(part, "rb") as f:
        while chunk := f.read(1 << 20):
            h_sha.update(chunk)
            h_md5.update(chunk)
    got_sha, got_md5 = h_sha.hexdigest(), h_md5.hexdigest()
    problems = []
    if sha256 is not None and not got_sha.startswith(sha256.lower()):
        problems.append(f"sha256 {got_sha} (expected {sha256})")
    if md5 is not None and got_md5 != md5.lower():
        problems.append(f"md5 {got_md5} (expected {md5})")
    if problems:
        part.unlink()
        raise ChecksumMismatch(
            f"checksum mismatch for {label or dest.name} from {url}: " + "; ".join(problems)
            + ". The downloaded file was removed. Try again; if it keeps failing, download it by hand and "
            "check it before `vidtriplane weights import`.")
    if sha256 is None and md5 is None:
        log.info("sha256 of %s: %s (not pinned in the registry)", label or dest.name, got_sha)
    nbytes = part.stat().st_size
    os.replace(part, dest)
    return DownloadResult(path=dest, url=url, nbytes=nbytes, sha256=got_sha, md5=got_md5)
