"""The geometry pass of a file: prefetching, the pass's arrays and report, errors from the decode thread."""
import numpy as np
import pytest

from tests.io.media import make_video
from vidtriplane.pipeline.geometry import prefetch, video_geometry


def test_prefetch_keeps_order_and_raises_the_producers_error():
    assert list(prefetch(iter(range(50)), size=3)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("decode failed")

    got = []
    with pytest.raises(RuntimeError, match="decode failed"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]
    early = prefetch(iter(range(1000)), size=2)
    assert next(early) == 0
    early.close()  # a consumer that stops early does not hang


def test_video_geometry_of_a_file(tmp_path):
    pytest.importorskip("dlib")
    from tests.commands.test_preprocess_cli import _encode
    from tests.stages.face_media import moving_clip
    from vidtriplane.cache import check_geometry
    from vidtriplane.config.preprocess import PreprocessConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.stages import preprocess as pp

    path = tmp_path / "talk.mp4"
    path.write_bytes(_encode(moving_clip(12, blank=(5,))))
    cfg = PreprocessConfig()
    models = pp.load_models(cfg)
    geo, report = video_geometry(path, cfg, models, batch_size=5)
    geo = check_geometry(geo, 12)  # exactly what a pose cache entry holds
    assert geo["face_found"].tolist() == [True] * 5 + [False] + [True] * 6 and geo["held"][5]
    assert report["frames"] == 12 and report["steadiness"]["mode"] == "offline" and report["seconds"] > 0
    # the pass reads the luma plane; the RGB frames of the same file give nearly the same crops
    with open_video(path) as reader:
        rgb, _ = pp.sequence_geometry(reader.batches(5), models, cfg)
    np.testing.assert_allclose(rgb["crop_matrix"], geo["crop_matrix"], atol=0.02, rtol=0.01)
