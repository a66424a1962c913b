"""Operations: the model registry in the object store, its lock, the nightly retrain, and generation.

Nothing here runs at import time; the CLI (`pokegan retrain`, `pokegan generate`) is the entry point.
"""
