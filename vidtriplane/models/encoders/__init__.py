"""Image encoders of TriPlaneNet: IR-SE-50 trunk, pSp (W+ codes), tri-plane encoders v1 and v2."""
from vidtriplane.models.encoders.psp import GradualStyleEncoder, PSPConfig
from vidtriplane.models.encoders.triplane import TriPlaneEncoder, TriPlaneEncoderConfig, TriPlaneEncoderV2

__all__ = ["GradualStyleEncoder", "PSPConfig", "TriPlaneEncoder", "TriPlaneEncoderConfig", "TriPlaneEncoderV2"]
