"""vidtriplane: talking-head video to novel-view video with TriPlaneNet (EG3D inversion).

Heavy modules (torch, av) are imported lazily by the submodules that need them, so that
``import vidtriplane`` and ``vidtriplane --help`` stay instant.
"""

__version__ = "0.1.0"
