"""Development and test tools that drive a real tritonserver: ``TritonServer`` (a server on free
loopback ports), ``soak``, ``overload`` and the GPU check (``gpu_check`` and its sections)."""
