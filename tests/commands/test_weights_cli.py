"""``vidtriplane weights`` end to end through Click (in-process), with a temp cache and a local server."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
from click.testing import CliRunner

from tests.weights.conftest import cache, send_file, server  # noqa: F401 - fixtures
from tests.weights.nvidia_pickle import build_snapshot
from tests.weights.test_api import lpips_bytes
from vidtriplane.cli import main
from vidtriplane.weights import REGISTRY, validate
from vidtriplane.weights.validate import shapes_of


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
    assert "already cached" in again.output and len(server.requests) == 1
    verified = run("verify", "lpips-alex-v0.1")
    assert verified.exit_code == 0 and "OK" in verified.output and hashlib.sha256(data).hexdigest() in verified.output
    (cache / "lpips-alex-v0.1" / "alex.pth").write_bytes(lpips_bytes(4))
    tampered = run("verify")
    assert tampered.exit_code == 1 and "MISMATCH" in tampered.output and "fetch again with --force" in tampered.output
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
