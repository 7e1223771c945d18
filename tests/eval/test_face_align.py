"""112x112 ArcFace alignment: similarity fit, warp of synthetic landmarks, the pluggable aligner."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vidtriplane.eval.face_align import (
    REFERENCE_112,
    faces_to_tensor,
    landmark_aligner,
    similarity_transform,
    warp_face_112,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float, mirror: bool = False) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)) * scale, math.sin(math.radians(angle_deg)) * scale
    m = np.array([[c, -s, tx], [s, c, ty]])
    if mirror:
        m[:, 0] *= -1  # reflect x before rotating
    return m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_reference_points_are_the_96x112_template_shifted_by_8():
    assert REFERENCE_112[0] == pytest.approx([38.29459953, 51.69630051])
    assert REFERENCE_112[4] == pytest.approx([70.72990036, 92.20410156])


@pytest.mark.parametrize("mirror", [False, True], ids=["rotation", "reflection"])
def test_similarity_fit_recovers_an_exact_transform(mirror):
    truth = _similarity(17.0, 1.8, 40.0, -12.0, mirror=mirror)
    src = np.random.default_rng(0).uniform(0, 200, size=(5, 2))
    m = similarity_transform(src, _apply(truth, src))
    np.testing.assert_allclose(m, truth, atol=1e-9)
    assert np.sign(np.linalg.det(m[:, :2])) == (-1 if mirror else 1)


def test_similarity_fit_is_least_squares_for_noisy_points():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(5, 2))
    dst = _apply(_similarity(-5.0, 0.7, 3.0, 4.0), src) + rng.normal(0, 0.5, size=(5, 2))
    m = similarity_transform(src, dst)
    residual = np.linalg.norm(_apply(m, src) - dst)
    for eps in (1e-4, -1e-4):  # any perturbed similarity fits worse
        for d in np.eye(4):
            a, b, tx, ty = m[0, 0], m[1, 0], m[0, 2], m[1, 2]
            a, b, tx, ty = np.array([a, b, tx, ty]) + eps * d
            other = np.array([[a, -b, tx], [b, a, ty]])
            assert np.linalg.norm(_apply(other, src) - dst) >= residual


def _blob_image(points: np.ndarray, size: int = 300, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size))
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.repeat((img / img.max() * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def test_warp_puts_the_landmarks_on_the_reference_points():
    # a face 2.2x the template size, rotated by 12 degrees, somewhere in a 300 px image
    landmarks = _apply(_similarity(12.0, 2.2, 60.0, 20.0), REFERENCE_112)
    image = _blob_image(landmarks, sigma=2.2 * 1.5)
    face = warp_face_112(image, landmarks)
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8
    m = similarity_transform(landmarks, REFERENCE_112)
    direct = cv2.warpAffine(image, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    assert np.abs(face.astype(int) - direct.astype(int)).max() <= 1  # plain bilinear warpAffine, as official
    gray = face[..., 0].astype(np.float64)
    for rx, ry in REFERENCE_112:  # intensity centroid of each blob within 0.3 px of its reference point
        x0, y0 = int(round(rx)) - 4, int(round(ry)) - 4
        win = gray[y0:y0 + 9, x0:x0 + 9]
        yy, xx = np.mgrid[y0:y0 + 9, x0:x0 + 9]
        cx, cy = (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()
        assert abs(cx - rx) < 0.3 and abs(cy - ry) < 0.3, (cx, cy, rx, ry)


def test_landmark_aligner_reports_found_faces_and_normalises():
    landmarks = _apply(_similarity(0.0, 1.5, 10.0, 10.0), REFERENCE_112)
    face_img = _blob_image(landmarks, size=200)
    images = np.stack([face_img, np.zeros_like(face_img)])
    align = landmark_aligner(lambda img: landmarks if img.max() > 0 else None)
    aligned, found = align(images)
    assert aligned.shape == (2, 3, 112, 112) and aligned.dtype == torch.float32
    assert found.tolist() == [True, False]
    assert torch.equal(aligned[1], torch.full((3, 112, 112), -1.0))
    assert torch.equal(aligned[0], faces_to_tensor(warp_face_112(face_img, landmarks)[None])[0])
    assert float(aligned[0].max()) == pytest.approx(1.0, abs=0.02) and float(aligned[0].min()) == -1.0
    with pytest.raises(ValueError, match="uint8"):
        align(images.astype(np.float32))


def test_mtcnn_aligner_on_the_astronaut(mtcnn_nets):
    from tests.stages.face_media import astronaut
    from vidtriplane.eval.face_align import ID_PYRAMID_FACTOR, mtcnn_aligner
    from vidtriplane.stages import face_mtcnn

    img = astronaut()
    align = mtcnn_aligner(mtcnn_nets, "cpu")
    aligned, found = align(np.stack([img, np.zeros_like(img)]))
    assert found.tolist() == [True, False] and torch.equal(aligned[1], torch.full((3, 112, 112), -1.0))
    # the best face of the metric's detector settings, warped at MTCNN's own coordinates (ours + 0.5 px)
    best = face_mtcnn.detect(mtcnn_nets, img[None], thresholds=(0.15, 0.25, 0.35), min_face=20,
                             scale_factor=ID_PYRAMID_FACTOR, nms_thresholds=(0.7, 0.7, 0.7))[0]
    assert len(best) > 1 and float(best.scores[0]) == float(best.scores.max())
    points = best.points[0].double().numpy()
    assert torch.equal(aligned[0], faces_to_tensor(warp_face_112(img, points + 0.5)[None])[0])
    # the aligned face is the astronaut's, upright on the template: MTCNN finds its features where the
    # similarity put them (2x larger on a grey canvas, the detector is unsure of faces that fill the frame)
    face = ((aligned[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    canvas = np.full((448, 448, 3), 128, np.uint8)
    canvas[112:336, 112:336] = cv2.resize(face, (224, 224), interpolation=cv2.INTER_CUBIC)
    again = face_mtcnn.detect(mtcnn_nets, canvas[None])[0]
    assert len(again) == 1
    seen = (again.points[0].double().numpy() - 112 + 0.5) / 2 - 0.5  # back to the 112 crop's pixels
    m = similarity_transform(points + 0.5, REFERENCE_112)
    np.testing.assert_allclose(seen, points @ m[:, :2].T + m[:, 2], atol=3.0)  # measured 2.7 (a mouth corner)
    assert np.abs(seen - REFERENCE_112).max() < 7.0  # the astronaut's nose and mouth sit a little off the template
