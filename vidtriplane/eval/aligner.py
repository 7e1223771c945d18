"""The face aligner of the ID metric, in one place so that wiring a detector in is one line.

The official ID metric finds five landmarks with MTCNN before the 112x112 similarity warp
(``tpn:metrics/metrics.py``, ``tpn:models/mtcnn/mtcnn.py``). Until vidtriplane ships that detector,
:func:`id_aligner` returns None and ``vidtriplane evaluate`` reports ID as null with
:data:`ID_ALIGNER_MISSING` as the reason. With a detector ``detect(image) -> [5, 2] or None``, return
``landmark_aligner(detect)`` (``vidtriplane.eval.face_align``) here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from vidtriplane.eval.face_align import Aligner

ID_ALIGNER_MISSING = "needs the MTCNN face detector weights"


def id_aligner() -> Optional["Aligner"]:
    """The aligner the ID metric uses, or None when no face detector is available."""
    return None


__all__ = ["ID_ALIGNER_MISSING", "id_aligner"]
