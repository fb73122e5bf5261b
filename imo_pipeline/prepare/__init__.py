"""Dataset preparers: a release as published -> a manifest (``imo prepare DATASET ROOT``)."""

from .base import PREPARERS, KINDS, Issue, Preparer, PrepareReport, prepare, register_preparer

_MODULES = ("iemocap", "meld", "mosi", "ravdess", "cremad", "media", "emobox", "lhotse")


def load_all() -> None:
    """Import every preparer module so the registry is complete."""
    import importlib

    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")


__all__ = ["PREPARERS", "KINDS", "Issue", "Preparer", "PrepareReport", "prepare", "register_preparer", "load_all"]
