"""The EG3D alignment crop: POS, the official matrix vs a PIL re-enactment, fixture identity, borders."""
import numpy as np
import pytest

from tests.conftest import shared_path
from tests.stages.face_media import astronaut
from vidtriplane.geometry.warp import square_params, transform_points
from vidtriplane.stages import align

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def backend():
    from vidtriplane.stages.landmarks import load_backend

    return load_backend()


def _landmarks(image, backend):
    from vidtriplane.stages.landmarks import LandmarkState, track_frame, LandmarkConfig

    lm, conf, _ = track_frame(image, LandmarkState(), backend, LandmarkConfig())
    assert np.isfinite(lm).all(), "no face found"
    return lm


def test_pos_recovers_a_known_projection():
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    s, t, height = 180.0, np.array([300.0, 150.0]), 400
    proj = s * (align.REFERENCE_5 @ rot.T)[:, :2] + t  # flipped-y coordinates
    pts = np.stack([proj[:, 0], height - 1 - proj[:, 1]], 1)
    t_fit, s_fit = align.pos_fit(pts, height)
    np.testing.assert_allclose(t_fit, t, atol=1e-6)
    assert s_fit == pytest.approx(s, rel=1e-6)  # both rows of the fitted affine camera have norm s


def test_five_points_order():
    lm = np.zeros((68, 2))
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30], lm[48], lm[54] = [20, 30], [12, 40], [28, 40]
    np.testing.assert_allclose(align.five_points(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_five_points_pass_through():
    pts = np.arange(10, dtype=float).reshape(5, 2)
    np.testing.assert_array_equal(align.five_points(pts), pts)
    np.testing.assert_array_equal(align.crop_params(pts[None] * 10, 400), align.crop_params(pts[None] * 10, 400))
    with pytest.raises(ValueError):
        align.five_points(np.zeros((6, 2)))


def test_matrix_matches_the_official_pil_crop(backend):
    img = astronaut()
    lm = _landmarks(img, backend)
    ref = align.official_crop_reference(img, align.five_points(lm))
    mat = align.official_matrices(lm[None], 512, 512)
    ours = align.warp_crops(img[None], mat)[0]
    diff = np.abs(ref.astype(float) - ours.astype(float))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 12
    # the continuous crop differs from the integer-truncated one by well under a pixel of the 512 crop
    cont = align.crop_params(lm[None], 512)[0]
    off = square_params(mat, 512)[0]
    assert np.abs(cont[:2] - off[:2]).max() < 1.0 and cont[2] == pytest.approx(off[2], rel=0.01)


def test_aligning_the_official_crop_is_close_to_identity(backend):
    from PIL import Image

    img = np.asarray(Image.open(shared_path("fixtures", "eg3d_example", "example.png")).convert("RGB"))
    lm = _landmarks(img, backend)
    cx, cy, side = align.crop_params(lm[None], img.shape[0])[0]
    assert abs(cx - 255.5) < 0.02 * 512 and abs(cy - 255.5) < 0.02 * 512
    assert abs(side / 512 - 1) < 0.05


def test_crop_outside_the_frame_is_black(backend):
    img = astronaut()
    lm = _landmarks(img, backend)
    # put the face in the top-left corner of an odd-sized frame: the crop reaches past the frame edges
    frame = np.zeros((301, 257, 3), np.uint8)
    frame[:, :] = img[100:401, 180:437]
    lm_f = lm - [180, 100]
    mat = align.crop_matrices(align.crop_params(lm_f[None], frame.shape[0]))
    crop = align.warp_crops(frame[None], mat)[0]
    corner = transform_points(mat[0], np.array([[-1.0, -1.0]]))[0]
    assert corner[0] > 5 and corner[1] > 5  # the frame's corner is inside the crop
    assert crop[: int(corner[1]) - 2, :].max() == 0 and crop[:, : int(corner[0]) - 2].max() == 0
    assert crop[300, 300].max() > 0
