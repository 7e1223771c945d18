"""``vidtriplane preprocess``: video file, image folder and stdin in; crops + dataset.json out; pose cache."""
import io
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from tests.stages.face_media import astronaut, moving_clip
from tests.weights.conftest import cache  # noqa: F401 - fixture
from vidtriplane.cli import main

pytest.importorskip("dlib")
av = pytest.importorskip("av")


def _encode(frames, fmt="mp4", fps=25) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip():
    return moving_clip(6, blank=(3,))


def _labels(folder):
    return json.loads((folder / "dataset.json").read_text())["labels"]


def test_video_file_and_pose_cache(tmp_path, clip):
    video = tmp_path / "talk.mp4"
    video.write_bytes(_encode(clip))
    args = ["preprocess", str(video), "--cache-dir", str(tmp_path / "cache"), "-q"]
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    labels = _labels(tmp_path / "a")
    assert [name for name, _ in labels] == [f"{i:06d}.png" for i in range(6)]
    assert all(len(v) == 25 and v[16] == pytest.approx(4.2647) for _, v in labels)
    assert cv2.imread(str(tmp_path / "a" / "000000.png")).shape == (512, 512, 3)
    report = json.loads((tmp_path / "a" / "preprocess.json").read_text())
    assert report["frames"] == 6 and report["held"] == 1 and report["no_face"] == ["000003.png"]
    assert not report["cache_hit"]
    # a file: the geometry pass smoothed the whole video; the jitter and the tracker's work are reported
    assert report["steadiness"]["mode"] == "offline" and report["steadiness"]["frames_with_face"] == 5
    assert set(report["steadiness"]["ratio"]) == {"centre_x_px", "centre_y_px", "scale_pct", "yaw_deg", "pitch_deg"}
    assert sum(report["tracker"].values()) == 6 and report["tracker"]["detections"] >= 1
    # second run: same content under another name hits the cache and gives the same labels and crops
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(video.read_bytes())
    res = CliRunner().invoke(main, ["preprocess", str(copy), "--cache-dir", str(tmp_path / "cache"), "-q", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "preprocess.json").read_text())["cache_hit"]
    assert _labels(tmp_path / "b") == labels
    assert (cv2.imread(str(tmp_path / "b" / "000002.png")) == cv2.imread(str(tmp_path / "a" / "000002.png"))).all()
    # other settings miss the cache
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "c"), "--set", "hold_frames=0"])
    assert res.exit_code == 0 and not json.loads((tmp_path / "c" / "preprocess.json").read_text())["cache_hit"]


def test_stdin(tmp_path, clip):
    res = CliRunner().invoke(main, ["preprocess", "-", "-o", str(tmp_path), "-q"], input=_encode(clip, "nut"))
    assert res.exit_code == 0, res.output
    assert len(_labels(tmp_path)) == 6
    report = json.loads((tmp_path / "preprocess.json").read_text())
    assert report["frames"] == 6 and report["steadiness"]["mode"] == "causal"  # a pipe: no look-ahead


def test_image_folder_official_and_mirror(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    img = astronaut()
    cv2.imwrite(str(folder / "a.jpg"), img[..., ::-1])
    cv2.imwrite(str(folder / "b.png"), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[50:451, 20:333])  # grey, odd size
    cv2.imwrite(str(folder / "c.png"), np.zeros((64, 80, 3), np.uint8))  # no face
    res = CliRunner().invoke(main, ["preprocess", str(folder), "-o", str(tmp_path / "out"), "--official", "--mirror",
                                    "--no-cache", "-q"])
    assert res.exit_code == 0, res.output
    labels = dict((n, np.array(v)) for n, v in _labels(tmp_path / "out"))
    assert sorted(labels) == ["a.png", "a_mirror.png", "b.png", "b_mirror.png", "c.png", "c_mirror.png"]
    # mirrored label: x of the camera centre negated
    assert labels["a_mirror.png"][3] == pytest.approx(-labels["a.png"][3])
    report = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert report["no_face"] == ["c.png"] and report["fallback"] == 1
    assert (tmp_path / "out" / "preprocess.yaml").read_text().count("official_rounding: true") == 1


def test_bad_input_is_a_clear_error_and_leaves_no_output(tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["preprocess", str(tmp_path / "missing.mp4"), "-o", str(out)])
    assert res.exit_code == 2 and "missing.mp4 does not exist" in res.stderr and "Traceback" not in res.output
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    res = CliRunner().invoke(main, ["preprocess", str(bad), "-o", str(out), "--no-cache"])
    assert res.exit_code == 1 and f"cannot read {bad} as a video" in res.stderr and "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]  # no empty or partial output folder
    res = CliRunner().invoke(main, ["preprocess", str(bad), "-o", str(out), "--set", "nope=1"])
    assert res.exit_code == 2 and "unknown config key(s) nope" in res.stderr
    (out / "x").mkdir(parents=True)
    res = CliRunner().invoke(main, ["preprocess", str(bad), "-o", str(out)])
    assert res.exit_code == 2 and "already holds files; pass --overwrite" in res.stderr
    assert (out / "x").is_dir()


def test_dry_run_prints_the_resolved_config(tmp_path):
    import yaml

    res = CliRunner().invoke(main, ["preprocess", "x.mp4", "-o", str(tmp_path), "--dry-run", "--matting",
                                    "--set", "smooth.min_cutoff=0.5", "--config", "preprocess-official"])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.stdout)
    assert cfg["smooth"]["min_cutoff"] == 0.5 and cfg["matting"]["enabled"] is True
    assert cfg["align"]["official_rounding"] is True  # from the preset
    assert cfg["smooth"]["mode"] == "off" and cfg["hold_frames"] == 15


def test_offline_smoothing_of_stdin_is_refused_in_one_line(tmp_path, clip):
    res = CliRunner().invoke(main, ["preprocess", "-", "-o", str(tmp_path / "o"), "--set", "smooth.mode=offline"],
                             input=_encode(clip, "nut"))
    assert res.exit_code == 2 and "stdin is read once" in res.output and "Traceback" not in res.output


def test_device_sets_landmarks_device_and_set_can_too(tmp_path):
    import yaml

    args = ["preprocess", "x.mp4", "-o", str(tmp_path), "--dry-run"]
    res = CliRunner().invoke(main, args + ["--device", "cuda:1"])
    assert res.exit_code == 0 and yaml.safe_load(res.stdout)["landmarks"]["device"] == "cuda:1"
    res = CliRunner().invoke(main, args + ["--device", "cpu", "--set", "landmarks.device=cuda"])
    assert yaml.safe_load(res.stdout)["landmarks"]["device"] == "cuda"  # --set comes last
    assert yaml.safe_load(CliRunner().invoke(main, args).stdout)["landmarks"]["device"] == "auto"


def test_mtcnn_backend_on_a_video_and_its_pose_cache(tmp_path, clip, cache, mtcnn_wheel):
    from vidtriplane.cache import PoseCache
    from vidtriplane.weights import import_file

    import_file("mtcnn", mtcnn_wheel)
    video = tmp_path / "talk.mp4"
    video.write_bytes(_encode(clip))
    args = ["preprocess", str(video), "--cache-dir", str(tmp_path / "poses"), "-q", "--device", "cpu",
            "--set", "landmarks.backend=mtcnn"]
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "a" / "preprocess.json").read_text())
    assert report["frames"] == 6 and report["no_face"] == ["000003.png"] and report["tracker"]["tracked"] >= 2
    assert report["steadiness"]["mode"] == "offline"  # the geometry pass ran with MTCNN
    assert "device: cpu" in (tmp_path / "a" / "preprocess.yaml").read_text()
    labels = _labels(tmp_path / "a")
    assert len(labels) == 6 and all(v[16] == pytest.approx(4.2647) for _, v in labels)
    # the entry holds the five points and dlib's 68 for the pose; another device reads the same entry
    entry = PoseCache(tmp_path / "poses")
    (npz,) = entry.directory.glob("*.npz")
    with np.load(npz) as data:
        assert data["landmarks"].shape == (6, 5, 2) and data["pose_landmarks"].shape == (6, 68, 2)
    res = CliRunner().invoke(main, args[:-4] + ["--set", "landmarks.backend=mtcnn", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "preprocess.json").read_text())["cache_hit"]
    assert _labels(tmp_path / "b") == labels
    # an unknown device is one line, before anything is written
    res = CliRunner().invoke(main, args + ["--no-cache", "--device", "tpu", "-o", str(tmp_path / "c")])
    assert res.exit_code == 1 and "landmarks.device='tpu' is not a device" in res.stderr
    assert "Traceback" not in res.output and not (tmp_path / "c").exists()


def test_log_lines_name_the_final_folder(tmp_path, clip):
    """The dataset is written under a hidden temporary name; what the user reads names the real folder."""
    out = tmp_path / "data"
    res = CliRunner().invoke(main, ["preprocess", "-", "-o", str(out)], input=_encode(clip, "nut"))
    assert res.exit_code == 0, res.output
    assert f"-> {out}\n" in res.stderr and f"see {out / 'preprocess.json'}" in res.stderr  # frame 3 is blank
    assert ".partial" not in res.stderr


def test_raw_frames_on_stdin(tmp_path, clip):
    """ffmpeg -i in.mov -f rawvideo -pix_fmt rgb24 - | vidtriplane preprocess - --input-format rawvideo ..."""
    h, w = clip.shape[1:3]
    res = CliRunner().invoke(main, ["preprocess", "-", "-o", str(tmp_path / "raw"), "-q", "--input-format", "rawvideo",
                                    "--raw-size", f"{w}x{h}", "--raw-rate", "25"], input=clip.tobytes())
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "raw" / "preprocess.json").read_text())
    assert report["frames"] == 6 and report["no_face"] == ["000003.png"]  # the blank frame, in its place
    # the frame size is a usage error before anything runs, as for render
    res = CliRunner().invoke(main, ["preprocess", "-", "-o", str(tmp_path / "bad"), "--input-format", "rawvideo"],
                             input=clip.tobytes())
    assert res.exit_code == 2 and "--raw-size" in res.stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("layout", ["same_folder", "output_holds_folder", "output_holds_video"])
def test_output_over_the_input_is_refused_even_with_overwrite(tmp_path, clip, layout):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut()[..., ::-1])
    video = tmp_path / "talk.mp4"
    video.write_bytes(_encode(clip))
    src, out = {"same_folder": (photos, photos), "output_holds_folder": (photos, tmp_path),
                "output_holds_video": (video, tmp_path)}[layout]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = CliRunner().invoke(main, ["preprocess", str(src), "-o", str(out), "--overwrite", "-q"])
    assert res.exit_code == 2 and "choose another one" in res.stderr, res.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


def test_matting_carries_alphas_in_a_video_but_not_across_photos(tmp_path, clip):
    """Real u2netp: a video's crops between keys take carried alphas; a folder of photos (here the same
    photo twice, which flow would match perfectly) gets the network on every image."""
    from pathlib import Path
    import os

    pytest.importorskip("rembg")
    pytest.importorskip("onnx")
    u2netp = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net")) / "u2netp.onnx"
    if not u2netp.is_file():
        pytest.skip(f"{u2netp} is absent")
    src = tmp_path / "talk.mp4"
    src.write_bytes(_encode(clip))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(folder / name), astronaut()[..., ::-1])
    for source, out in ((src, tmp_path / "video"), (folder, tmp_path / "folder")):
        res = CliRunner().invoke(main, ["preprocess", str(source), "-o", str(out), "--matting", "--no-cache", "-q",
                                        "--set", "matting.every=4"])
        assert res.exit_code == 0, res.output
    video = json.loads((tmp_path / "video" / "preprocess.json").read_text())["matting"]
    assert video["network"] + video["carried"] == 6 and video["carried"] >= 1 and video["network"] >= 2
    assert len(list((tmp_path / "video" / "alpha").glob("*.png"))) == 6
    assert json.loads((tmp_path / "folder" / "preprocess.json").read_text())["matting"] == {"network": 2, "carried": 0}
