"""The streaming pipeline end to end with a tiny generated-weights model on the CPU (plumbing, not quality)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from tests.io.media import make_video, probe
from vidtriplane.config import apply_overrides
from vidtriplane.io.reader import InputError
from vidtriplane.io.writer import partial_path
from vidtriplane.config import resolve
from vidtriplane.errors import UsageError
from vidtriplane.pipeline import OutOfMemory, choose_batch_size, load_models, output_targets, render_video
from vidtriplane.pipeline.build import build_generated
from vidtriplane.stages import invert as invert_stage
from vidtriplane.stages import render as render_stage

# as small and fast as the tiny model goes; one torch thread (the test machine has 2 busy cores)
FAST = ["runtime.device=cpu", "runtime.torch_threads=1", "render.depth_samples=4",
        "render.importance_samples=4", "render.neural_rendering_resolution=16", "render.size=64", "composite.tile=64",
        "output.preset=ultrafast", "runtime.cpu_batch_size=3"]


def decode(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def decode_render(src, out, models, *overrides: str) -> np.ndarray:
    render_video(src, out, models, tiny_cfg(*overrides), progress=False)
    return decode(out)


def tiny_cfg(*overrides: str):
    return resolve("render", pipeline="aligned", configs=["generated-tiny"], overrides=[*FAST, *overrides])


@pytest.fixture(scope="module")
def models():
    threads = torch.get_num_threads()
    yield load_models(tiny_cfg())
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "vfr.mp4"
    times = make_video(path, n_frames=5, width=80, height=64, vfr=True)
    return path, times


def test_file_to_file_keeps_frames_timestamps_audio(tmp_path, models, clip):
    src, times = clip
    out = tmp_path / "out.mkv"
    report = render_video(src, out, models, tiny_cfg(), progress=False)
    info = probe(out)
    assert report.frames == info["n"] == len(times) == 5
    assert [float(t) for t in info["times"]] == pytest.approx([float(t) for t in times], abs=1e-3)
    assert info["has_audio"] and info["audio_packets"] == probe(src)["audio_packets"]
    assert info["size"] == (3 * 64, 64)  # input crop | same view | novel view
    assert report.weights == "generated" and report.batch_size == 3
    assert {"decode", "preprocess", "invert", "render", "composite", "encode"} <= set(report.stage_seconds)
    assert not partial_path(out).exists()
    # content: the first tile is each input frame's centre square, in order
    got, inputs = decode(out), decode(src)
    for i in range(5):
        crop = inputs[i][:, 8:72].astype(int)
        assert np.abs(got[i][:, :64].astype(int) - crop).mean() < 8
        assert np.abs(got[i][:, :64].astype(int) - inputs[(i + 2) % 5][:, 8:72]).mean() > \
            np.abs(got[i][:, :64].astype(int) - crop).mean()


def test_separate_views_and_paste(tmp_path, models, clip):
    src, _ = clip
    cfg = tiny_cfg("composite.layout=crop", "composite.views_output=separate",
                   "render.views=[{name: left, yaw: -0.4}, {name: right, mode: orbit}]")
    report = render_video(src, tmp_path / "v.mp4", models, cfg, progress=False)
    assert set(report.outputs) == {"left", "right"}
    for name in ("left", "right"):
        info = probe(tmp_path / f"v_{name}.mp4")
        assert info["n"] == 5 and info["size"] == (64, 64)
    left, right = decode(tmp_path / "v_left.mp4"), decode(tmp_path / "v_right.mp4")
    assert np.abs(left.astype(int) - right.astype(int)).mean() > 1  # two different cameras
    grid = decode_render(src, tmp_path / "g.mp4", models, "composite.layout=crop",
                         "render.views=[{name: left, yaw: -0.4}, {name: right, mode: orbit}]")
    assert np.abs(grid[:, :, :64].astype(int) - left.astype(int)).mean() < 3  # the grid's tiles are the views
    assert np.abs(grid[:, :, 64:].astype(int) - right.astype(int)).mean() < 3
    report = render_video(src, tmp_path / "p.mkv", models, tiny_cfg("composite.layout=paste"), progress=False)
    assert probe(tmp_path / "p.mkv")["size"] == (80, 64)  # the full frame
    pasted, inputs = decode(tmp_path / "p.mkv"), decode(src)
    # outside the centre square the input frame is kept; inside, the render replaced it
    assert np.abs(pasted[:, :, :7].astype(int) - inputs[:, :, :7].astype(int)).mean() < 4
    assert np.abs(pasted[:, 8:56, 16:64].astype(int) - inputs[:, 8:56, 16:64].astype(int)).mean() > 10


def test_oom_retries_with_smaller_batches(tmp_path, models, clip, monkeypatch):
    src, _ = clip
    real = invert_stage.apply
    sizes = []

    def flaky(batch, *args, **kwargs):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(invert_stage, "apply", flaky)
    report = render_video(src, tmp_path / "o.mkv", models, tiny_cfg(), progress=False)
    assert report.batch_size == 1 and report.frames == 5
    assert sizes[:3] == [3, 1, 1]  # 3 fails -> halved to 1, and it stays there
    assert probe(tmp_path / "o.mkv")["n"] == 5

    monkeypatch.setattr(invert_stage, "apply", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError()))
    with pytest.raises(OutOfMemory, match="one frame per batch"):
        render_video(src, tmp_path / "never.mkv", models, tiny_cfg("runtime.batch_size=1"), progress=False)
    assert not (tmp_path / "never.mkv").exists() and not partial_path(tmp_path / "never.mkv").exists()


def test_failure_midway_leaves_no_output(tmp_path, models, clip, monkeypatch):
    src, _ = clip
    calls = {"n": 0}
    real = render_stage.apply

    def fail_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(render_stage, "apply", fail_second)
    out = tmp_path / "o.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        render_video(src, out, models, tiny_cfg(), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_input_errors(tmp_path, models):
    with pytest.raises(InputError, match="does not exist"):
        render_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", models, tiny_cfg(), progress=False)
    with pytest.raises(UsageError, match="stdout"):
        output_targets("-", ["a", "b"])


def test_batch_size_choice():
    cfg = tiny_cfg()
    assert choose_batch_size(cfg, torch.device("cpu")) == 3
    assert choose_batch_size(tiny_cfg("runtime.batch_size=7"), torch.device("cpu")) == 7


def test_view_cameras():
    from vidtriplane.geometry.camera import lookat_label, yaw_pitch
    from vidtriplane.config.render import ViewConfig

    labels = lookat_label(torch.tensor([0.1, -0.2]), torch.tensor([0.05, 0.0]))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    absolute = render_stage.view_cameras(ViewConfig(yaw=0.3, pitch=0.1), labels, t)
    assert torch.allclose(absolute, lookat_label(torch.tensor([0.3, 0.3]), torch.tensor([0.1, 0.1])), atol=1e-5)
    rel = render_stage.view_cameras(ViewConfig(mode="relative", yaw=0.2, pitch=0.0), labels, t)
    yaw, pitch = yaw_pitch(rel)
    assert yaw.tolist() == pytest.approx([0.3, 0.0], abs=1e-4)
    assert pitch.tolist() == pytest.approx([0.05, 0.0], abs=1e-4)
    sway = ViewConfig(mode="sway", yaw=0.0, amplitude_yaw=0.5, period=4.0)
    yaw, _ = yaw_pitch(render_stage.view_cameras(sway, labels, torch.tensor([0.0, 1.0])))
    assert yaw.tolist() == pytest.approx([0.0, 0.5], abs=1e-4)  # sin(2 pi * 1/4) = 1
    orbit = ViewConfig(mode="orbit", yaw=0.0, pitch=0.0, amplitude_yaw=0.3, amplitude_pitch=0.2, period=4.0)
    yaw, pitch = yaw_pitch(render_stage.view_cameras(orbit, labels, torch.tensor([0.0, 1.0])))
    assert yaw.tolist() == pytest.approx([0.0, 0.3], abs=1e-4)
    assert pitch.tolist() == pytest.approx([0.2, 0.0], abs=1e-4)


def test_generated_weights_are_deterministic():
    from vidtriplane.config.render import ModelConfig

    a = build_generated(ModelConfig(weights="generated", size="tiny", seed=3))
    b = build_generated(ModelConfig(weights="generated", size="tiny", seed=3))
    c = build_generated(ModelConfig(weights="generated", size="tiny", seed=4))
    ka = next(iter(a.state_dict()))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.state_dict()[ka], c.state_dict()[ka]) or any(
        not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_time_base_fraction_survives(tmp_path, models):
    """NTSC-like 30000/1001 input: output timestamps land on the same instants."""
    src = tmp_path / "ntsc.mkv"
    import av

    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(30000, 1001))
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = i * 1001, Fraction(1, 30000)
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    out = tmp_path / "ntsc_out.mp4"
    render_video(src, out, models, tiny_cfg("composite.layout=crop"), progress=False)
    got = [float(t) for t in probe(out)["times"]]
    assert got == pytest.approx([float(t) for t in probe(src)["times"]], abs=1e-3)


def face_sample(path, seconds: float, size: int):
    """The repository's sample clip (samples/make_sample.py: a real face moving), or skip without dlib / skimage."""
    pytest.importorskip("dlib")
    pytest.importorskip("skimage")
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[2] / "samples" / "make_sample.py"
    spec = importlib.util.spec_from_file_location("make_sample", script)
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    return sample.make_sample(path, seconds=seconds, size=size)


def test_face_preprocessing_and_pose_cache(tmp_path, monkeypatch):
    """Default pipeline (face landmarks, EG3D crop, pose) on the sample-style clip; the second render of
    the same file reuses the cached geometry instead of detecting faces again."""
    from vidtriplane.stages import preprocess

    src = face_sample(tmp_path / "face.mp4", seconds=0.16, size=384)  # 4 frames
    monkeypatch.setenv("VIDTRIPLANE_CACHE", str(tmp_path / "cache"))
    cfg = resolve("render", pipeline="default", configs=["generated-tiny"],
                         overrides=[*FAST, "composite.layout=paste"])
    models = load_models(cfg)
    first = render_video(src, tmp_path / "a.mp4", models, cfg, progress=False)
    assert first.frames == 4 and first.faces_found == 4 and first.held == 0
    assert probe(tmp_path / "a.mp4")["n"] == 4
    assert probe(tmp_path / "a.mp4")["size"] == (384, 384)  # pasted back into the full frame
    assert len(list((tmp_path / "cache" / "poses").glob("*.npz"))) == 1
    # a file: the geometry pass with the offline smoother ran first, and the report says what it did
    assert first.stage_seconds["geometry"] > 0 and first.preprocess["steadiness"]["mode"] == "offline"
    assert first.preprocess["frames"] == 4 and sum(first.preprocess["tracker"].values()) == 4
    fail = lambda *a, **k: pytest.fail("the pose cache was not used")  # noqa: E731
    monkeypatch.setattr(preprocess, "geometry", fail)
    monkeypatch.setattr(preprocess, "sequence_geometry", fail)
    other_camera = apply_overrides(cfg, ["render.views=[{name: left, yaw: -0.5}]"])
    second = render_video(src, tmp_path / "b.mp4", models, other_camera, progress=False)
    assert second.frames == 4 and second.faces_found == 4 and "geometry" not in second.stage_seconds
    # the paste shows the same-view reconstruction, which the novel camera does not change: the cached
    # geometry (crops, cameras, paste matrices) must reproduce the first run's frames exactly
    a, b = decode(tmp_path / "a.mp4"), decode(tmp_path / "b.mp4")
    assert np.array_equal(a, b)
    inputs = decode(src)
    assert np.abs(a[:, 150:250, 150:250].astype(int) - inputs[:, 150:250, 150:250].astype(int)).mean() > 5


def test_face_preprocessing_from_a_pipe_is_causal(tmp_path):
    """stdin: no geometry pass; the causal smoother, one output frame per input frame."""
    src = face_sample(tmp_path / "face.mp4", seconds=0.2, size=256)  # 5 frames
    cfg = resolve("render", pipeline="default", configs=["generated-tiny"],
                  overrides=[*FAST, "composite.layout=crop", "runtime.pose_cache=false"])
    with open(src, "rb") as stdin:
        report = render_video("-", tmp_path / "a.mp4", load_models(cfg), cfg, progress=False, stdin=stdin)
    assert report.frames == probe(tmp_path / "a.mp4")["n"] == probe(src)["n"] == 5
    assert "geometry" not in report.stage_seconds and report.preprocess["steadiness"]["mode"] == "causal"


@pytest.mark.slow
def test_full_size_model_two_frames(tmp_path):
    """The official-size architecture (generated weights) through the whole pipeline on 2 frames."""
    src = tmp_path / "two.mp4"
    make_video(src, n_frames=2, width=96, height=96)
    cfg = resolve("render", pipeline="aligned", overrides=[
        "model.weights=generated", "composite.layout=crop", "render.depth_samples=24",
        "render.importance_samples=24", "runtime.batch_size=2", "output.preset=ultrafast"])
    report = render_video(src, tmp_path / "out.mp4", load_models(cfg), cfg, progress=False)
    info = probe(tmp_path / "out.mp4")
    assert report.frames == info["n"] == 2 and info["size"] == (512, 512) and info["has_audio"]


@pytest.mark.gpu
def test_cuda_auto_batch_and_render(tmp_path, clip):
    cfg = tiny_cfg("runtime.device=cuda", "runtime.batch_size=0")
    gpu_models = load_models(cfg)
    size = choose_batch_size(cfg, gpu_models.device)
    assert 1 <= size <= cfg.runtime.max_batch_size
    report = render_video(clip[0], tmp_path / "gpu.mkv", gpu_models, cfg, progress=False)
    assert report.frames == probe(tmp_path / "gpu.mkv")["n"] == 5 and report.device.startswith("cuda")


def test_the_runs_device_reaches_the_face_models(monkeypatch):
    from vidtriplane.stages import preprocess

    seen = {}
    monkeypatch.setattr(preprocess, "load_models", lambda cfg, *, device=None: seen.setdefault("device", device))
    cfg = resolve("render", pipeline="default", configs=["generated-tiny"], overrides=FAST)
    models = load_models(cfg)
    assert seen["device"] == "cpu" == str(models.device) and models.preprocess == "cpu"


def test_compiled_backend_and_network_through_the_pipeline_match_eager(tmp_path, clip):
    """render.backend=compiled with the network compiled: the short last batch is padded to the compiled
    batch size, every frame comes out once, and the images match the eager reference."""
    src, _ = clip
    fast_cfg = tiny_cfg("render.backend=compiled", "render.compile_network=default", "composite.layout=crop")
    fast_models = load_models(fast_cfg)
    assert fast_models.static_shapes
    report = render_video(src, tmp_path / "fast.mkv", fast_models, fast_cfg, progress=False)
    assert report.frames == 5 and probe(tmp_path / "fast.mkv")["n"] == 5
    eager_cfg = tiny_cfg("render.backend=eager", "composite.layout=crop")
    render_video(src, tmp_path / "eager.mkv", load_models(eager_cfg), eager_cfg, progress=False)
    diff = np.abs(decode(tmp_path / "fast.mkv").astype(int) - decode(tmp_path / "eager.mkv").astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 8


def test_an_unavailable_backend_is_one_clear_error():
    from vidtriplane.pipeline import PipelineError

    with pytest.raises(PipelineError, match="render.backend=triton: .*needs"):
        load_models(tiny_cfg("render.backend=triton"))
