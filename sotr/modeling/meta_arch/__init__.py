from .sotr import SOTR  # noqa: F401  (registers the meta-architecture)
