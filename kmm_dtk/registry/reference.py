"""The docker reference grammar, which lives in the core (the planner validates Modules' images with
it); re-exported here for the registry code that parses what it asks for."""

from kmm_dtk.core.reference import DEFAULT_REGISTRY, ImageRef, ReferenceError

__all__ = ["DEFAULT_REGISTRY", "ImageRef", "ReferenceError"]
