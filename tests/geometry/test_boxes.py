"""Box helpers: NMS against a brute-force greedy loop, overlaps, squaring, exact area-averaged crops."""
import cv2
import numpy as np
import pytest
import torch

from vidtriplane.geometry import boxes as bx


def brute_nms(b, s, thr, groups=None, mode="union"):
    """The textbook greedy loop (MTCNN's nms with +1-free edge-coordinate areas)."""
    b = np.asarray(b, np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    order = list(np.argsort(-np.asarray(s), kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            iw = max(0.0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            ih = max(0.0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = iw * ih
            o = inter / min(area[i], area[j]) if mode == "min" else inter / (area[i] + area[j] - inter)
            same = groups is None or groups[i] == groups[j]
            if not (same and o > thr):
                rest.append(j)
        order = rest
    return keep


def random_boxes(n, seed):
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 200, (n, 2))
    wh = g.uniform(5, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1), g.uniform(0, 1, n), g.integers(0, 3, n)


@pytest.mark.parametrize("mode", ["union", "min"])
@pytest.mark.parametrize("block", [7, 512])
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_matches_the_greedy_loop(mode, block, seed):
    b, s, g = random_boxes(200, seed)
    for thr, groups in ((0.5, None), (0.3, g), (0.7, g)):
        ours = bx.nms(torch.tensor(b, dtype=torch.float32), torch.tensor(s), thr,
                      groups=None if groups is None else torch.tensor(groups), mode=mode, block=block)
        assert ours.tolist() == brute_nms(b.astype(np.float32), s, thr, groups, mode)


def test_nms_keeps_disjoint_boxes_and_drops_duplicates():
    b = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.0]])
    s = torch.tensor([0.5, 0.9, 0.8, 0.7])
    assert bx.nms(b, s, 0.5).tolist() == [1, 2]
    # the same boxes in another group survive
    assert bx.nms(b, s, 0.5, groups=torch.tensor([0, 0, 0, 1])).tolist() == [1, 2, 3]
    assert bx.nms(b[:0], s[:0], 0.5).numel() == 0


def test_overlap_modes():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 10, 10], [20.0, 20, 30, 30]])
    np.testing.assert_allclose(bx.overlap(a, b).numpy(), [[0.5, 0.0]])
    np.testing.assert_allclose(bx.overlap(a, b, "min").numpy(), [[1.0, 0.0]])


def test_square_regress_truncate():
    sq = bx.square(torch.tensor([[10.0, 20.0, 30.0, 60.0]]))
    np.testing.assert_allclose(sq.numpy(), [[0.0, 20.0, 40.0, 60.0]])
    moved = bx.regress(torch.tensor([[0.0, 0, 10, 20]]), torch.tensor([[0.1, -0.1, 0.2, 0.0]]))
    np.testing.assert_allclose(moved.numpy(), [[1.0, -2.0, 12.0, 20.0]], atol=1e-6)
    moved = bx.regress(torch.tensor([[0.0, 0, 11, 21]]), torch.tensor([[0.1, 0.1, 0, 0]]), size_offset=-1)
    np.testing.assert_allclose(moved.numpy(), [[1.0, 2.0, 11, 21]], atol=1e-6)
    # MTCNN's np.fix of 1-based corners: x0 = 4.7 -> fix(5.7) - 1 = 4; x0 = -2.5 -> fix(-1.5) - 1 = -2
    t = bx.truncate(torch.tensor([[4.7, -2.5, 30.9, -0.5]]))
    np.testing.assert_allclose(t.numpy(), [[4.0, -2.0, 30.0, 0.0]])


def _image(h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_crop_resize_equals_opencv_area_for_integer_boxes():
    img = _image()
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    boxes = torch.tensor([[3.0, 5.0, 51.0, 53.0], [10.0, 0.0, 80.0, 60.0], [0.0, 12.0, 24.0, 36.0]])
    crops = bx.crop_resize(t, torch.zeros(3, dtype=torch.long), boxes, 24)
    for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        ref = cv2.resize(img[y0:y1, x0:x1].astype(np.float32), (24, 24), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(crops[k].permute(1, 2, 0).numpy(), ref, atol=1e-3)


def test_crop_resize_pads_with_black_and_handles_fractional_boxes():
    img = _image(seed=1)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    # half outside on the left/top: zero padding as in MTCNN's crops
    crop = bx.crop_resize(t, torch.zeros(1, dtype=torch.long), torch.tensor([[-20.0, -20.0, 20.0, 20.0]]), 4)[0]
    assert (crop[:, :2, :] == 0).all() and (crop[:, :, :2] == 0).all()
    ref = cv2.resize(img[:20, :20].astype(np.float32), (2, 2), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(crop[:, 2:, 2:].permute(1, 2, 0).numpy(), ref, atol=1e-3)
    # fractional box: the exact separable area weights (coverage of each pixel by each output cell)
    box = (5.3, 7.6, 41.9, 39.2)
    crop = bx.crop_resize(t, torch.zeros(1, dtype=torch.long), torch.tensor([box]), 6)[0].permute(1, 2, 0).numpy()

    def weights(lo, hi, n_pixels):
        edges = lo + (hi - lo) * np.arange(7) / 6
        pix = np.arange(n_pixels)
        cover = np.clip(np.minimum(edges[1:, None], pix + 1) - np.maximum(edges[:-1, None], pix), 0, None)
        return cover / ((hi - lo) / 6)

    wy, wx = weights(box[1], box[3], img.shape[0]), weights(box[0], box[2], img.shape[1])
    ref = np.einsum("ay,yxc,bx->abc", wy, img.astype(np.float64), wx)
    np.testing.assert_allclose(crop, ref, atol=1e-3)


def test_crop_resize_picks_each_boxs_own_frame():
    a, b = _image(seed=2), _image(seed=3)
    t = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float()
    box = torch.tensor([[8.0, 8.0, 32.0, 32.0]] * 2)
    crops = bx.crop_resize(t, torch.tensor([1, 0]), box, 12)
    ref_b = cv2.resize(b[8:32, 8:32].astype(np.float32), (12, 12), interpolation=cv2.INTER_AREA)
    ref_a = cv2.resize(a[8:32, 8:32].astype(np.float32), (12, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(crops[0].permute(1, 2, 0).numpy(), ref_b, atol=1e-3)
    np.testing.assert_allclose(crops[1].permute(1, 2, 0).numpy(), ref_a, atol=1e-3)
