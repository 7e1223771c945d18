"""Weight registry, cache, downloads, structure checks and the safe reader for NVIDIA's .pkl files.

    from vidtriplane.weights import resolve, WeightsMissing
    ckpt_path = resolve("triplanenet-v1")                 # cached file; downloaded on first use
    ckpt_path = resolve("triplanenet-v1", offline=True)   # WeightsMissing with the import command if absent

Modules: ``registry`` (names, URLs, licences, checksums), ``store`` (cache directory), ``download``
(HTTP with resume), ``validate`` (keys and shapes), ``pickle_safe`` (NVIDIA .pkl -> tensors + config,
executing nothing), ``api`` (resolve / fetch / import_file / verify).
"""
from vidtriplane.weights.api import (
    OFFLINE_ENV,
    StoredWeights,
    VerifyResult,
    WeightsMissing,
    fetch,
    import_file,
    offline_from_env,
    resolve,
    verify,
)
from vidtriplane.weights.download import ChecksumMismatch, DownloadError
from vidtriplane.weights.registry import REGISTRY, UnknownWeights, WeightEntry, get_entry
from vidtriplane.weights.store import cache_dir, stored_path

__all__ = [
    "OFFLINE_ENV", "REGISTRY", "ChecksumMismatch", "DownloadError", "StoredWeights", "UnknownWeights",
    "VerifyResult", "WeightEntry", "WeightsMissing", "cache_dir", "fetch", "get_entry", "import_file",
    "offline_from_env", "resolve", "stored_path", "verify",
]
