"""MTCNN networks: key names and shapes of the published weights, strict loading, output shapes and values."""
import pytest
import torch

from vidtriplane.models import mtcnn
from vidtriplane.models.state import StateDictMismatch, check_state_dict

# key -> shape of facenet-pytorch's pnet.pt / rnet.pt / onet.pt (read from the 2.6.0 wheel)
PUBLISHED = {
    "pnet": {"conv1.weight": (10, 3, 3, 3), "prelu1.weight": (10,), "conv3.weight": (32, 16, 3, 3),
             "conv4_1.weight": (2, 32, 1, 1), "conv4_2.bias": (4,)},
    "rnet": {"conv3.weight": (64, 48, 2, 2), "dense4.weight": (128, 576), "prelu4.weight": (128,),
             "dense5_1.weight": (2, 128), "dense5_2.weight": (4, 128)},
    "onet": {"conv4.weight": (128, 64, 2, 2), "dense5.weight": (256, 1152), "dense6_1.bias": (2,),
             "dense6_2.weight": (4, 256), "dense6_3.weight": (10, 256)},
}
COUNTS = {"pnet": 13, "rnet": 16, "onet": 21}


@pytest.mark.parametrize("name", mtcnn.NETS)
def test_keys_and_shapes_match_the_published_files(name):
    sd = getattr(mtcnn.MTCNN(), name).state_dict()
    assert len(sd) == COUNTS[name]
    for key, shape in PUBLISHED[name].items():
        assert tuple(sd[key].shape) == shape


def test_strict_load_rejects_a_wrong_shape():
    sd = mtcnn.RNet().state_dict()
    sd["dense4.weight"] = torch.zeros(128, 512)
    with pytest.raises(StateDictMismatch, match="dense4.weight"):
        check_state_dict(mtcnn.RNet(), sd, what="R-net")


def test_forward_shapes():
    torch.manual_seed(0)
    nets = mtcnn.MTCNN().eval()
    with torch.no_grad():
        p = nets.pnet(torch.randn(2, 3, 31, 40))
        r = nets.rnet(torch.randn(5, 3, 24, 24))
        o = nets.onet(torch.randn(4, 3, 48, 48))
    # P-net: (31 - 2) -> pool ceil 15 -> 13 -> 11 rows; (40 - 2) -> 19 -> 17 -> 15 columns
    assert p.scores.shape == (2, 11, 15) and p.offsets.shape == (2, 4, 11, 15) and p.points is None
    assert r.scores.shape == (5,) and r.offsets.shape == (5, 4) and r.points is None
    assert o.scores.shape == (4,) and o.offsets.shape == (4, 4) and o.points.shape == (4, 10)
    for s in (p.scores, r.scores, o.scores):
        assert ((s >= 0) & (s <= 1)).all()


def test_dense_layers_see_x_major_features():
    """The trunk is flattened column by column (x outermost, then y, then channel), the layout of the
    original transposed-image networks; the real-weight test below fails with any other order."""
    x = torch.randn(1, 64, 3, 3)
    flat = mtcnn._flatten_xy(x)[0]
    assert torch.equal(flat[:64], x[0, :, 0, 0])  # (x 0, y 0)
    assert torch.equal(flat[64:128], x[0, :, 1, 0])  # (x 0, y 1)
    assert torch.equal(flat[192:256], x[0, :, 0, 1])  # (x 1, y 0)
    assert mtcnn.RNet().dense4.in_features == flat.numel()


def test_real_weights_load_strictly_and_score_a_face(mtcnn_nets):
    from tests.stages.face_media import astronaut
    from vidtriplane.geometry.boxes import crop_resize

    img = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float()
    face = torch.tensor([[175.0, 60.0, 270.0, 172.0]])  # Eileen Collins' face (edge coordinates)
    sky = torch.tensor([[400.0, 0.0, 500.0, 100.0]])
    with torch.no_grad():
        crops = crop_resize(img, torch.zeros(2, dtype=torch.long), torch.cat([face, sky]), 48)
        out = mtcnn_nets.onet(mtcnn.normalize(crops))
    assert out.scores[0] > 0.99 and out.scores[1] < 0.1
    pts = out.points[0]
    assert pts[0] < pts[1] and pts[3] < pts[4]  # x: left eye < right eye, left mouth < right mouth
    assert max(pts[5], pts[6]) < pts[7] < min(pts[8], pts[9])  # y: eyes above nose above mouth
