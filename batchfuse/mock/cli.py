"""``batchfuse mock-server``: run the fake API in the foreground until SIGINT or SIGTERM.

The main CLI registers :data:`mock_server`; ``python -m batchfuse.mock`` runs it on its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from .config import MockConfig
from .server import MockServer

_RATE = click.FloatRange(0.0, 1.0)


@click.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8801, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@click.option("--latency-ms", default=0.0, type=click.FloatRange(min=0), help="Delay of every generation.")
@click.option(
    "--jitter-ms", default=0.0, type=click.FloatRange(min=0), help="Uniform ± spread around the latency."
)
@click.option("--rpm-limit", type=click.IntRange(min=0), help="Requests per minute per key before 429.")
@click.option(
    "--daily-quota", type=click.IntRange(min=0), help="Successful generations per key before per-day 429."
)
@click.option("--rate-500", default=0.0, type=_RATE, help="Share of requests answered 500.")
@click.option("--rate-503", default=0.0, type=_RATE, help="Share of requests answered 503.")
@click.option("--rate-hang", default=0.0, type=_RATE, help="Share of requests that never answer.")
@click.option("--rate-reset", default=0.0, type=_RATE, help="Share of connections dropped without an answer.")
@click.option("--rate-truncate", default=0.0, type=_RATE, help="Share of replies cut off halfway.")
@click.option("--rate-safety", default=0.0, type=_RATE, help="Share of replies blocked for image safety.")
@click.option("--rate-text-only", default=0.0, type=_RATE, help="Share of replies with text but no image.")
@click.option("--rate-no-image", default=0.0, type=_RATE, help="Share of replies with finishReason NO_IMAGE.")
@click.option("--seed", type=int, help="Seed for fault draws, so a run can be replayed.")
@click.option("--hang-s", default=3600.0, type=click.FloatRange(min=0), help="How long a hang lasts.")
@click.option(
    "--image-scale", default=1.0, type=click.FloatRange(min=0, min_open=True), help="Output size factor."
)
@click.option(
    "--image-mode",
    default="collage",
    type=click.Choice(["collage", "solid", "noise"]),
    show_default=True,
    help="noise: real-size, real-entropy PNGs (one per size, cached), for benchmarks.",
)
@click.option(
    "--images-per-reply", default=1, type=click.IntRange(min=1), help="Gemini image parts per reply."
)
@click.option("--url-ttl-s", default=86400.0, type=click.FloatRange(min=0), help="Lifetime of result URLs.")
@click.option(
    "--static-dir", type=click.Path(exists=True, file_okay=False), help="Serve these files at /files/."
)
@click.option(
    "--api-key-env", metavar="NAME", help="Env var holding the only accepted key (default: any key)."
)
@click.option(
    "--thought-images/--no-thought-images",
    default=True,
    show_default=True,
    help="Gemini 3 models send an interim 'thought' image first, as the real API does.",
)
@click.option("--data-url-in-text", is_flag=True, help="Relay variant: image as a data URL in a text part.")
@click.option("--record-bodies", is_flag=True, help="Keep request bodies in the request log.")
def mock_server(host: str, port: int, api_key_env: str | None, **options: object) -> None:
    """Run a fake Gemini / OpenAI-images API that returns real PNGs and injects faults."""
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise click.UsageError(
                f"environment variable {api_key_env} is empty or not set; put the accepted key in it"
            )
    config = MockConfig(api_key=api_key, **options)  # type: ignore[arg-type]
    try:
        asyncio.run(_serve(config, host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:  # platforms without loop signal handlers
        pass


async def _serve(config: MockConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    async with MockServer(config, host, port) as server:
        click.echo(f"mock API listening on {server.url}")
        sys.stdout.flush()  # whoever started us waits for this line on a pipe
        await stop.wait()
