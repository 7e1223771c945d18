"""The render and preprocess pipelines: the only place stages meet.

* ``build``    models from the config (once per process) and the per-video stage chain;
* ``stream``   the threaded streaming runtime (bounded channels, errors handed back);
* ``report``   what a video run did;
* ``outputs``  which files a render config writes (no torch: planning and ``--dry-run`` stay fast);
* ``video``    one video end to end (:func:`render_video`);
* ``dataset``  one preprocess job: a video, image folder or stdin into a dataset folder (crops + labels);
* ``geometry`` the whole-video geometry pass of a file (landmarks, then the offline smoother).

Names are imported lazily so that ``vidtriplane.pipeline.outputs`` does not load torch. Folder runs
(skip finished outputs, keep going on errors) live in :mod:`vidtriplane.runners`.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Models": "build", "OutOfMemory": "build", "PipelineError": "build", "WeightFiles": "build",
    "build_chain": "build", "choose_batch_size": "build", "load_models": "build", "resolve_device": "build",
    "RunReport": "report", "output_names": "outputs", "output_targets": "outputs", "planned_outputs": "outputs",
    "render_video": "video",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vidtriplane.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vidtriplane.pipeline.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
