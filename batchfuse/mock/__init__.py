"""A fake image-generation API for demos, tests and benchmarks.

It speaks Gemini's native ``generateContent`` and the OpenAI-compatible
``/v1/images/generations`` strictly, answers with real PNGs, and injects faults on request:
by rate (``MockConfig.rate_503=0.1``), by marker in the prompt (``[[mock:503*2]]``), or by
state (``rpm_limit``, ``daily_quota``, ``outage_until``). See ``faults.py`` for the markers.

Usage::

    from batchfuse.mock import MockConfig, MockServerThread

    with MockServerThread(MockConfig(image_scale=0.0625)) as srv:
        ...  # send requests to srv.url; srv.requests() is the request log
"""

from .config import MockConfig
from .server import MockServer, MockServerThread, create_app

__all__ = ["MockConfig", "MockServer", "MockServerThread", "create_app"]
