"""Runs on the serving host beside tritonserver: the server launcher (``rtmo-tritonserver``), the
production entry point (``rtmo-serve``) and its health guard. Standard library only."""
