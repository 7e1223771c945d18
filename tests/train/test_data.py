"""Training data: dataset checks and their messages, pixels, synthetic samples, sharding and exact resumption."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidtriplane.config.train import CameraSampling
from vidtriplane.geometry.camera import flip_yaw, lookat_label, yaw_pitch
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
from vidtriplane.train.data import (DataError, EpochSampler, TrainSamples, batch_stream, load_conf_map, load_image,
                                    render_synthetic, resize_image, scan_dataset, with_conf_maps)


def make_dataset(root: Path, n: int = 3, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """``n`` random crops with look-at labels at yaw 0.1 * i; returns the pixels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels, labels = [], []
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"{i:06d}.png")
        pixels.append(img)
        labels.append([f"{i:06d}.png", lookat_label(0.1 * i, 0.0).tolist()])
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return pixels


def test_a_good_folder_is_read_with_its_labels(tmp_path):
    make_dataset(tmp_path)
    images = scan_dataset(tmp_path)
    assert images.names == ("000000.png", "000001.png", "000002.png")
    yaw, _ = yaw_pitch(torch.from_numpy(images.labels))
    assert np.allclose(yaw.numpy(), [0.0, 0.1, 0.2], atol=1e-5)


def test_missing_dataset_json(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(DataError, match=r"has no dataset.json.*vidtriplane preprocess"):
        scan_dataset(tmp_path)


def test_every_kind_of_bad_entry_is_named_in_one_message(tmp_path):
    make_dataset(tmp_path, n=3)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["labels"][0][1] = meta["labels"][0][1][:24]                  # 24 numbers
    meta["labels"][1][1][3] = float("nan")                             # not finite
    meta["labels"].append(["gone.png", lookat_label(0.0, 0.0).tolist()])  # no such image
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    (tmp_path / "stray.png").write_bytes((tmp_path / "000002.png").read_bytes())  # no label
    (tmp_path / "000002.png").write_bytes(b"not a png")                 # unreadable
    with pytest.raises(DataError) as info:
        scan_dataset(tmp_path)
    text = str(info.value)
    assert "2 label(s) are not 25 finite numbers: 000000.png, 000001.png" in text
    assert "1 label(s) name images that do not exist: gone.png" in text
    assert "1 image(s) have no label in dataset.json: stray.png" in text
    assert "1 image(s) cannot be read: 000002.png" in text


def test_long_lists_are_cut_with_a_count(tmp_path):
    make_dataset(tmp_path, n=1)
    for i in range(8):
        (tmp_path / f"extra{i}.png").write_bytes((tmp_path / "000000.png").read_bytes())
    with pytest.raises(DataError, match=r"8 image\(s\) have no label.*extra4.png, \.\.\. \(3 more\)"):
        scan_dataset(tmp_path)


def test_resize_is_the_official_bilinear_for_2x_and_a_box_mean_otherwise():
    x = torch.rand(2, 3, 64, 64)
    official = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)  # torchvision 0.12 Resize
    assert torch.allclose(resize_image(x, 32), official, atol=1e-6)
    box = x.reshape(2, 3, 16, 4, 16, 4).mean(dim=(3, 5))
    assert torch.allclose(resize_image(x, 16), box, atol=1e-6)
    assert resize_image(x, 64) is x


def test_load_image_scales_to_minus_one_one(tmp_path):
    pixels = make_dataset(tmp_path, n=1, size=8)
    x = load_image(tmp_path / "000000.png", 8)
    assert torch.allclose(x, torch.from_numpy(pixels[0]).permute(2, 0, 1).float() / 127.5 - 1)


def test_real_samples_mirror_copies_and_confidence_maps(tmp_path):
    pixels = make_dataset(tmp_path, n=2, size=8)
    (tmp_path / "conf_map").mkdir()
    conf = np.arange(64, dtype=np.float32).reshape(8, 8)
    np.save(tmp_path / "conf_map" / "000001.npy", conf)
    images = with_conf_maps(scan_dataset(tmp_path))
    ds = TrainSamples(images, synthetic=0, image_size=8, conf_size=8, z_dim=4, seed=0, mirror=True)
    assert len(ds) == 4
    plain, flipped = ds[(0, 1)], ds[(0, 3)]
    assert torch.allclose(plain["image"], torch.from_numpy(pixels[1]).permute(2, 0, 1).float() / 127.5 - 1)
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.allclose(flipped["label"], flip_yaw(plain["label"]))
    assert torch.equal(plain["conf"], torch.from_numpy(conf[:, ::-1].copy()))  # the v2 dataset mirrors the map
    assert not ds[(0, 0)]["conf"].any()  # no map: zeros = weight 1 in the mirror losses
    assert not plain["synthetic"]


def test_synthetic_samples_are_reproducible_and_fresh_per_epoch():
    cam = CameraSampling(yaw_std=0.3, yaw_range=(-0.5, 0.5), pitch_std=0.1, pitch_range=(-0.2, 0.2))
    ds = TrainSamples(None, synthetic=5, image_size=8, conf_size=8, z_dim=16, seed=3, camera=cam)
    a, b = ds[(2, 4)], ds[(2, 4)]
    assert torch.equal(a["z"], b["z"]) and torch.equal(a["label"], b["label"]) and a["synthetic"]
    assert not torch.equal(ds[(3, 4)]["z"], a["z"])
    assert not torch.equal(ds[(2, 3)]["z"], a["z"])
    fixed = TrainSamples(None, synthetic=5, image_size=8, conf_size=8, z_dim=16, seed=3, camera=cam, refresh=False)
    assert torch.equal(fixed[(7, 4)]["z"], fixed[(0, 4)]["z"])
    yaws = torch.stack([yaw_pitch(ds[(0, i)]["label"])[0] for i in range(5)])
    assert (yaws.abs() <= 0.5 + 1e-5).all() and yaws.std() > 0
    frontal = lookat_label(0.0, 0.0).float()
    assert torch.allclose(a["c_cond"], frontal)


def test_sharded_epochs_cover_the_single_process_batches():
    single = EpochSampler(16, world=1, rank=0, seed=5)
    shards = [EpochSampler(16, world=2, rank=r, seed=5) for r in range(2)]
    for s in [single, *shards]:
        s.set_position(1, 0)
    one = [i for _, i in single]
    two = [[i for _, i in s] for s in shards]
    for step in range(4):  # global batch 4 = 2 processes x 2
        assert sorted(one[4 * step:4 * step + 4]) == sorted(two[0][2 * step:2 * step + 2] + two[1][2 * step:2 * step + 2])
    single.set_position(1, 6)
    assert [i for _, i in single] == one[6:]


def test_a_stream_started_at_step_k_continues_the_full_stream():
    ds = TrainSamples(None, synthetic=6, image_size=4, conf_size=4, z_dim=3, seed=0)

    def stream(start):
        sampler = EpochSampler(len(ds), seed=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, drop_last=True)
        return batch_stream(loader, sampler, start_step=start, batch_size=2)

    full, resumed = stream(0), stream(4)
    batches = [next(full)["z"] for _ in range(8)]
    for k in range(4, 8):  # step 4 is the second epoch's second batch
        assert torch.equal(next(resumed)["z"], batches[k])


def test_synthetic_rows_are_rendered_by_the_generator(tmp_path):
    torch.manual_seed(0)
    G = EG3DGenerator(EG3DConfig.tiny()).eval().requires_grad_(False)
    make_dataset(tmp_path, n=1, size=16)
    images = scan_dataset(tmp_path)
    ds = TrainSamples(images, synthetic=1, image_size=16, conf_size=16, z_dim=G.cfg.z_dim, seed=0)
    batch = torch.utils.data.default_collate([ds[(0, 0)], ds[(0, 1)]])
    out = render_synthetic(batch, G, psi=0.7, cutoff=14, depth_samples=4, importance_samples=4)
    assert torch.equal(out[0], batch["image"][0])  # the real row is untouched
    ws = G.mapping(batch["z"][1:], batch["c_cond"][1:], truncation_psi=0.7, truncation_cutoff=14)
    direct = G.synthesis(ws, batch["label"][1:], depth_samples=4, importance_samples=4).image.clamp(-1, 1)
    assert torch.allclose(out[1:], F.adaptive_avg_pool2d(direct, 16), atol=1e-6)
    assert out[1].std() > 0


def test_conf_map_shape_error(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(DataError, match=r"shape \[2, 3, 4\]"):
        load_conf_map(tmp_path / "bad.npy", 4)
