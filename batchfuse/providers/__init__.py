"""The provider registry: the only place that knows which providers exist.

A provider is a module with one :class:`~batchfuse.providers.base.Provider` subclass.
Adding one means writing its module and naming it here; nothing else changes.
"""

from __future__ import annotations

from importlib import import_module

from batchfuse.providers.base import Provider

PROVIDERS: dict[str, str] = {
    "gemini": "batchfuse.providers.gemini:GeminiProvider",
    "openai_images": "batchfuse.providers.openai_images:OpenAIImagesProvider",
}


def provider_class(kind: str) -> type[Provider]:
    """The provider class registered as ``kind``; raises KeyError with the known kinds."""
    try:
        module, _, name = PROVIDERS[kind].partition(":")
    except KeyError:
        raise KeyError(f"unknown provider kind {kind!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    return getattr(import_module(module), name)
