"""batchfuse: an async batch job runner for image-generation APIs."""

__version__ = "0.1.0"
