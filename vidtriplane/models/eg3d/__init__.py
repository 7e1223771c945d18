"""EG3D tri-plane generator (FFHQ-512), our own pure-PyTorch implementation with official key names.

See :mod:`vidtriplane.models.eg3d.generator` for the public API.
"""
from vidtriplane.models.eg3d.config import EG3DConfig
from vidtriplane.models.eg3d.generator import EG3DGenerator, EG3DOutput, EG3DRender
from vidtriplane.models.eg3d.renderer import RenderResult, RenderSettings

__all__ = ["EG3DConfig", "EG3DGenerator", "EG3DOutput", "EG3DRender", "RenderResult", "RenderSettings"]
