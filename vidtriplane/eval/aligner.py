"""The face aligner of the ID metric, in one place.

The official ID metric finds five landmarks with MTCNN before the 112x112 similarity warp
(``tpn:metrics/metrics.py``, ``tpn:models/mtcnn/mtcnn.py``). :func:`id_aligner` loads our MTCNN from the
weight registry (entry ``mtcnn``) and returns the metric's aligner
(:func:`vidtriplane.eval.face_align.mtcnn_aligner`); without the weights it returns None and
``vidtriplane evaluate`` reports ID as null with :data:`ID_ALIGNER_MISSING` as the reason.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from vidtriplane.errors import VidtriplaneError

if TYPE_CHECKING:
    from vidtriplane.eval.face_align import Aligner

log = logging.getLogger(__name__)

ID_ALIGNER_MISSING = ("needs the MTCNN face detector weights: `vidtriplane weights fetch mtcnn`, or offline "
                      "`vidtriplane weights import mtcnn facenet_pytorch-2.6.0-py3-none-any.whl` (PyPI wheel)")


def id_aligner(device: Optional[str] = None) -> Optional["Aligner"]:
    """The aligner the ID metric uses, or None when the MTCNN weights cannot be had."""
    from vidtriplane import checkpoints
    from vidtriplane.eval.face_align import mtcnn_aligner
    from vidtriplane.weights import resolve

    try:
        nets = checkpoints.load_mtcnn(resolve("mtcnn"))
    except VidtriplaneError as exc:
        log.warning("ID metric skipped: %s", str(exc).splitlines()[0])
        return None
    return mtcnn_aligner(nets, device)


__all__ = ["ID_ALIGNER_MISSING", "id_aligner"]
