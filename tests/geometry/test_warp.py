"""Affine helpers: algebra, crop squares, warps with black borders and anti-aliasing, paste-back."""
import numpy as np
import pytest

from vidtriplane.geometry import warp


def test_invert_compose_transform_roundtrip():
    rng = np.random.default_rng(0)
    m = np.array([[1.3, 0.2, 5.0], [-0.1, 0.9, -3.0]])
    pts = rng.uniform(-50, 50, (10, 2))
    back = warp.transform_points(warp.invert_affine(m), warp.transform_points(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    np.testing.assert_allclose(warp.compose_affine(m, warp.invert_affine(m)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    shift = warp.scale_translate(1, 1, 2, 3)
    np.testing.assert_allclose(warp.transform_points(warp.compose_affine(shift, m), pts),
                               warp.transform_points(m, pts) + [2, 3], atol=1e-9)


def test_square_params_inverts_square_crop_matrix():
    m = warp.square_crop_matrix(120.25, 80.5, 300.0, 512)
    np.testing.assert_allclose(warp.square_params(m, 512), [120.25, 80.5, 300.0], atol=1e-9)
    # the square's edges land on the crop's edges: edge coordinate cx - side/2 maps to -0.5
    assert warp.transform_points(m, np.array([[120.25 - 150.0 - 0.5, 80.5]]))[0, 0] == pytest.approx(-0.5 - 512 / 300 * 0.5)
    assert warp.transform_points(m, np.array([[120.25, 80.5]]))[0, 0] == pytest.approx(255.5)


def test_integer_crop_is_a_slice_and_outside_is_black():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    m = warp.scale_translate(1, 1, -10, -5)  # crop starting at x=10, y=5
    out = warp.warp_affine(img, m, (20, 30))
    np.testing.assert_array_equal(out, img[5:35, 10:30])
    # a crop hanging over the right/bottom edge: the part outside the frame is black
    m = warp.scale_translate(1, 1, -50, -30)
    out = warp.warp_affine(img, m, (20, 20))
    np.testing.assert_array_equal(out[:10, :10], img[30:40, 50:60])
    assert out[10:].max() == 0 and out[:, 10:].max() == 0
    # completely outside
    assert warp.warp_affine(img, warp.scale_translate(1, 1, 500, 500), (8, 8)).max() == 0


def test_downscale_is_antialiased():
    x = np.arange(256)
    wave = 127.5 + 127.5 * np.sin(2 * np.pi * x / 2.7)  # far above the Nyquist limit of the 8x smaller output
    stripes = np.rint(np.tile(wave, (256, 1))).astype(np.uint8)
    m = warp.square_crop_matrix(127.5, 127.5, 256.0, 31)
    smooth = warp.warp_affine(stripes, m, (31, 31))
    naive = warp.warp_affine(stripes, m, (31, 31), antialias=False)
    assert abs(float(smooth[4:-4, 4:-4].mean()) - 127.5) < 10 and smooth[4:-4, 4:-4].std() < 10
    assert naive.std() > smooth.std() * 3


def test_paste_back_restores_the_crop_region():
    y, x = np.mgrid[0:120, 0:160]
    img = np.stack([x, y, x + y], -1).astype(np.uint8)
    m = warp.square_crop_matrix(80.0, 60.0, 50.0, 128)
    crop = warp.warp_affine(img, m, (128, 128))
    back = warp.paste_back(crop, m, (160, 120))
    region = (slice(40, 80), slice(60, 100))
    assert np.abs(back[region].astype(int) - img[region].astype(int)).max() <= 2
    assert back[:20].max() == 0  # outside the crop nothing is pasted
