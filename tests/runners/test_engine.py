"""Choosing the runner: ``--engine local|ray`` and its options, defined once for render and preprocess."""
from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from tests.io.media import make_video
from vidtriplane.cli import main
from vidtriplane.runners.engine import RAY_MISSING, Engine, RayMissing, RayOptions
from vidtriplane.runners.jobs import Job


@pytest.mark.parametrize("command", ["render", "preprocess"])
def test_engine_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    clip = tmp_path / "in.mp4"
    make_video(clip, n_frames=2, width=64, height=64)
    out = tmp_path / ("out.mp4" if command == "render" else "out")
    result = CliRunner().invoke(main, [command, str(clip), "-o", str(out), "--engine", "ray"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"vidtriplane: error: {RAY_MISSING}"
    assert "pip install 'vidtriplane[ray]'" in result.stderr and not out.exists()


@pytest.mark.parametrize("command", ["render", "preprocess"])
def test_both_commands_take_the_same_engine_options(command):
    from vidtriplane.commands import preprocess, render

    names = {p.name for p in (render if command == "render" else preprocess).command.params}
    assert {"engine", "address", "workers", "gpus_per_worker", "cpus_per_worker"} <= names
    assert ("segment_frames" in names) == (command == "render")  # only a render can be cut into segments


def test_ray_options_are_refused_with_the_local_engine(tmp_path):
    result = CliRunner().invoke(main, ["preprocess", "x.mp4", "-o", str(tmp_path), "--gpus-per-worker", "1",
                                       "--address", "auto"])
    assert result.exit_code == 2 and "--address, --gpus-per-worker only apply to --engine ray" in result.stderr


def test_engine_options_become_ray_options(tmp_path, monkeypatch):
    from vidtriplane.commands.options import make_engine

    engine = make_engine("ray", "auto", 3, 0.5, None, 100, {"quiet": True})
    assert engine == Engine("ray", RayOptions(address="auto", workers=3, gpus_per_worker=0.5, cpus_per_worker=1.0,
                                              segment_frames=100, progress=False))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayMissing):
        engine.check([Job("a.mp4", "b.mp4", ("b.mp4",))])
    Engine().check([Job("-", "-")])  # the local engine takes pipes


def test_an_address_that_does_not_answer_is_one_clear_error():
    import socket

    from vidtriplane.runners.ray_cluster import ClusterUnavailable, _check_reachable

    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterUnavailable, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")
    _check_reachable("auto")  # names Ray resolves itself are left to it
