"""imo: multimodal emotion recognition on cached self-supervised embeddings."""

__version__ = "0.1.0"
