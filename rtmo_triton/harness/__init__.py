"""Development and test harness: a CPU ``tritonserver`` from PyPI and a server context manager."""
