"""Typed errors. Every message names the file/utterance/option, the bad value and the fix."""


class ImoError(Exception):
    """Base class of every error imo raises on purpose."""


class ConfigError(ImoError):
    """A bad option, project config or component config."""


class ManifestError(ImoError):
    """A manifest line that does not follow the schema."""


class MediaError(ImoError):
    """One utterance's media could not be decoded or is unusable."""


class StoreError(ImoError):
    """An embedding store that is missing, locked, incompatible or damaged."""


class LockError(StoreError):
    """A store part is being written by another job."""
