"""download(): resume with Range, atomic final file, checksums, Google Drive confirmation pages."""
from __future__ import annotations

import hashlib
import logging
import os

import pytest

from tests.weights.conftest import send_file, send_html
from vidtriplane.weights.download import ChecksumMismatch, DownloadError, confirmation_url, download

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_plain_download_verifies_sha_and_is_atomic(server, tmp_path):
    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA)
    dest = tmp_path / "f.bin"
    result = download([server.url("/f.bin")], dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA
    assert result.sha256 == SHA and result.nbytes == len(DATA)
    assert _files(tmp_path) == ["f.bin"]  # no .part left behind


def test_sha256_prefix_pin_and_unpinned_hash_logged(server, tmp_path, caplog):
    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA)
    with caplog.at_level(logging.INFO, logger="vidtriplane.weights.download"):
        download([server.url("/f.bin")], tmp_path / "a.bin", sha256=SHA[:8], progress=False)
        download([server.url("/f.bin")], tmp_path / "b.bin", progress=False)
    assert caplog.messages == [f"sha256 of b.bin: {SHA} (not pinned in the registry)"]


def test_resume_after_connection_drop_uses_range(server, tmp_path):
    calls = []

    def flaky(h, q):
        calls.append(1)
        send_file(h, DATA, drop_after=100_000 if len(calls) == 1 else None)

    server.routes["/f.bin"] = flaky
    dest = tmp_path / "f.bin"
    download([server.url("/f.bin")], dest, sha256=SHA, retries=2, progress=False)
    assert dest.read_bytes() == DATA
    ranges = server.ranges("/f.bin")
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) >= 100_000 - 65536


def test_interrupted_download_leaves_no_final_file_then_resumes(server, tmp_path):
    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA, drop_after=120_000)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download([server.url("/f.bin")], dest, sha256=SHA, retries=0, progress=False)
    assert not dest.exists()
    part = tmp_path / "f.bin.part"
    assert 0 < part.stat().st_size < len(DATA)
    kept = part.stat().st_size
    assert part.read_bytes() == DATA[:kept]

    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA)  # a later run ("same command again")
    download([server.url("/f.bin")], dest, sha256=SHA, retries=0, progress=False)
    assert dest.read_bytes() == DATA and not part.exists()
    assert server.ranges("/f.bin")[-1] == f"bytes={kept}-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * 5000)  # stale partial content
    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA, honour_range=False)
    download([server.url("/f.bin")], tmp_path / "f.bin", sha256=SHA, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert server.ranges("/f.bin") == ["bytes=5000-"]


def test_checksum_mismatch_removes_file(server, tmp_path):
    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA)
    with pytest.raises(ChecksumMismatch, match="downloaded file was removed") as info:
        download([server.url("/f.bin")], tmp_path / "f.bin", sha256="0" * 64, progress=False)
    assert SHA in str(info.value)
    assert _files(tmp_path) == []


def test_md5_mismatch(server, tmp_path):
    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA)
    with pytest.raises(ChecksumMismatch, match="md5"):
        download([server.url("/f.bin")], tmp_path / "f.bin", md5="0" * 32, progress=False)
    ok = download([server.url("/f.bin")], tmp_path / "g.bin", md5=hashlib.md5(DATA).hexdigest(), progress=False)
    assert ok.path.read_bytes() == DATA


DRIVE_FORM = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="FILEID"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="1234-abcd"></form>
</body></html>"""


def test_google_drive_confirmation_form(server, tmp_path):
    def uc(h, q):
        send_html(h, DRIVE_FORM.format(action=server.url("/download")))

    def usercontent(h, q):
        if q.get("uuid") == "1234-abcd" and q.get("confirm") == "t" and q.get("id") == "FILEID":
            send_file(h, DATA)
        else:
            h.send_error(403)

    server.routes["/uc"] = uc
    server.routes["/download"] = usercontent
    dest = tmp_path / "model.pth"
    download([server.url("/uc?export=download&id=FILEID")], dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA
    assert [p.split("?")[0] for p, _ in server.requests] == ["/uc", "/download"]


def test_google_drive_legacy_confirm_token_and_resume(server, tmp_path):
    page = '<html><body><a id="uc-download-link" href="/uc?export=download&amp;confirm=Xy_9&amp;id=FILEID">Download anyway</a></body></html>'
    calls = []

    def uc(h, q):
        if q.get("confirm") != "Xy_9":
            send_html(h, page, cookie="download_warning_13=Xy_9; Path=/")
            return
        calls.append(1)
        send_file(h, DATA, drop_after=50_000 if len(calls) == 1 else None)

    server.routes["/uc"] = uc
    dest = tmp_path / "model.pth"
    download([server.url("/uc?export=download&id=FILEID")], dest, sha256=SHA, retries=1, progress=False)
    assert dest.read_bytes() == DATA
    confirmed = [r for p, r in server.requests if "confirm=Xy_9" in p]
    assert confirmed[0] is None and confirmed[1] and confirmed[1].startswith("bytes=")


def test_confirmation_from_cookie_only():
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    cookie = http.cookiejar.Cookie(0, "download_warning_x", "TOK", None, False, "example.com", False, False, "/",
                                   False, False, None, True, None, None, {})
    jar.set_cookie(cookie)
    url = confirmation_url("<html>no form</html>", "https://example.com/uc?export=download&id=A", jar)
    assert url == "https://example.com/uc?export=download&id=A&confirm=TOK"
    assert confirmation_url("<html>nothing</html>", "https://example.com/x") is None


def test_html_page_without_confirmation_is_an_error(server, tmp_path):
    server.routes["/uc"] = lambda h, q: send_html(h, "<html>Too many users have viewed or downloaded this file recently</html>")
    with pytest.raises(DownloadError, match="quota"):
        download([server.url("/uc?id=1")], tmp_path / "m.pth", retries=0, progress=False)
    assert _files(tmp_path) == []


def test_falls_back_to_second_url(server, tmp_path):
    server.routes["/good"] = lambda h, q: send_file(h, DATA)
    dest = tmp_path / "m.bin"
    result = download([server.url("/missing"), server.url("/good")], dest, sha256=SHA, progress=False)
    assert result.url.endswith("/good") and dest.read_bytes() == DATA


def test_all_urls_failing_reports_each_once(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download([server.url("/a"), server.url("/b")], tmp_path / "m.bin", progress=False)
    assert str(info.value).splitlines() == ["could not download m.bin:", f"  {server.url('/a')}: HTTP 404 Not Found",
                                            f"  {server.url('/b')}: HTTP 404 Not Found"]
    assert [p for p, _ in server.requests] == ["/a", "/b"]  # a 404 is not retried


def test_complete_part_file_is_finished_without_downloading_again(server, tmp_path):
    """Killed after the last byte but before the rename: the server answers 416 and the part is kept."""
    (tmp_path / "f.bin.part").write_bytes(DATA)
    server.routes["/f.bin"] = lambda h, q: send_file(h, DATA)
    download([server.url("/f.bin")], tmp_path / "f.bin", sha256=SHA, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert server.ranges("/f.bin") == [f"bytes={len(DATA)}-"]
