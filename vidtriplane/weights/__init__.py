"""Weight registry, store, downloads, structure checks and the safe readers.

    from vidtriplane.weights import resolve, WeightsMissing
    ckpt_path = resolve("triplanenet-v1")                 # stored file; downloaded on first use
    ckpt_path = resolve("triplanenet-v1", offline=True)   # WeightsMissing with the import command if absent

Modules, from the bottom of the dependency graph up: ``loader`` (the one ``torch.load(weights_only=True)``
with precise errors), ``registry`` (names, URLs, licences, checksums), ``store`` (the folder on disk),
``download`` (HTTP with resume), ``pickle_safe`` (NVIDIA .pkl -> tensors + config, executing nothing),
``validate`` (keys and shapes, through ``vidtriplane.checkpoints``), ``api`` (resolve / fetch /
import_file / verify), ``rembg_files`` (where matting finds its ONNX model), ``mtcnn_files`` (the MTCNN
networks read from the facenet-pytorch wheel).

The names below are imported on first use, so importing one submodule (``vidtriplane.weights.store``)
does not import the others (and torch with them).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **{name: "vidtriplane.weights.api" for name in (
        "OFFLINE_ENV", "StoredWeights", "VerifyResult", "WeightsMissing", "fetch", "import_file", "offline_from_env",
        "resolve", "verify")},
    "ChecksumMismatch": "vidtriplane.weights.download",
    "DownloadError": "vidtriplane.weights.download",
    "REGISTRY": "vidtriplane.weights.registry",
    "UnknownWeights": "vidtriplane.weights.registry",
    "WeightEntry": "vidtriplane.weights.registry",
    "get_entry": "vidtriplane.weights.registry",
    "cache_dir": "vidtriplane.weights.store",
    "stored_path": "vidtriplane.weights.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
