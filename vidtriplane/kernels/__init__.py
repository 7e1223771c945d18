"""Optional hand-written GPU kernels (Triton). Every kernel has a pure-PyTorch reference in
``vidtriplane.models``; nothing here is imported unless the ``triton`` backend is asked for."""
