"""Training fusion heads on cached embeddings: data, tasks, metrics, trainer, run folders, plots."""
