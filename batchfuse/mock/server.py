"""The aiohttp app (routes, admin routes) and two ways to run it: in a loop, or in a thread.

Usage::

    async with MockServer(MockConfig(image_scale=0.0625)) as srv:
        ...  # point a client at srv.url; inspect srv.log

    with MockServerThread(MockConfig(api_key="k")) as srv:   # from sync code
        srv.configure(rate_503=0.5)
        ...
        srv.requests("/v1beta")
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

from aiohttp import web

from .batch_api import add_batch_routes, reset_batches
from .config import MockConfig, apply_changes
from .gemini import API_VERSIONS, handle_generate_content
from .openai import handle_images_generations, handle_result_download, openai_error, safe_static_path
from .state import STATE_KEY, MockState, RequestLog, state_of

#: aiohttp's own cap; each API refuses past its documented limit itself (Gemini: 20 MB), after
#: reading the body, so the client sees that API's error rather than a dropped connection.
MAX_BODY_BYTES = 256 * 1024 * 1024


def create_app(config: MockConfig | None = None) -> web.Application:
    """The mock API as an aiohttp application, for any runner (tests, ``web.run_app``, the CLI)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    state = MockState(config if config is not None else MockConfig())
    app[STATE_KEY] = state
    add_batch_routes(app)  # Files + Batch APIs under /v1beta (before the catch-all models route)
    for version in API_VERSIONS:  # google-genai calls /v1 unless told otherwise; REST docs use /v1beta
        app.router.add_post(f"/{version}/models/{{name}}", handle_generate_content)
    app.router.add_post("/v1/images/generations", handle_images_generations)
    app.router.add_get("/results/{name}", handle_result_download)
    app.router.add_get("/files/{name}", handle_static_file)
    app.router.add_get("/_mock/log", handle_admin_log)
    app.router.add_post("/_mock/config", handle_admin_config)
    app.router.add_post("/_mock/reset", handle_admin_reset)
    app.router.add_post("/_mock/faults", handle_admin_faults)

    async def release_hangs(_app: web.Application) -> None:
        state.stopping.set()  # hanging handlers return at once instead of holding up shutdown

    app.on_shutdown.append(release_hangs)
    return app


async def handle_static_file(request: web.Request) -> web.StreamResponse:
    """``GET /files/{name}``: a file from ``static_dir`` (reference images over http in tests)."""
    state = state_of(request)
    entry = state.begin(request, "files")
    entry["key_ok"] = True  # plain file hosting, no key involved
    path = safe_static_path(state.config.static_dir, request.match_info["name"])
    if path is None:
        return state.finish(entry, openai_error(404, "No such file.", "invalid_request_error", "not_found"))
    return state.finish(entry, web.FileResponse(path))


def public_config(config: MockConfig) -> dict[str, Any]:
    """The config as JSON, with the accepted key replaced by whether one is set."""
    values = dataclasses.asdict(config)
    values["api_key"] = "(set)" if config.api_key is not None else None
    return values


async def handle_admin_log(request: web.Request) -> web.Response:
    """``GET /_mock/log``: the request log as a JSON list (for a mock in another process)."""
    return web.json_response(list(state_of(request).log))


async def handle_admin_config(request: web.Request) -> web.Response:
    """``POST /_mock/config``: change config fields; ``outage_s`` starts an outage of that length."""
    state = state_of(request)
    try:
        changes = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be a JSON object of config fields"}, status=400)
    if not isinstance(changes, dict):
        return web.json_response({"error": "body must be a JSON object of config fields"}, status=400)
    try:
        changed = apply_changes(state.config, changes)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"changed": changed, "config": public_config(state.config)})


async def handle_admin_faults(request: web.Request) -> web.Response:
    """``POST /_mock/faults``: open/close fault windows (see ``FaultWindows``); ``{}`` just reports.
    ``"expire_results": true`` expires every result URL now (the next download answers 403)."""
    state = state_of(request)
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        return web.json_response(apply_fault_changes(state, changes))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)


def apply_fault_changes(state: MockState, changes: dict[str, Any]) -> dict[str, Any]:
    """Fault windows, plus ``expire_results`` (the result store is not a window's business)."""
    changes = dict(changes)
    if changes.pop("expire_results", False) is True:
        state.results.expire_all()
    return state.windows.apply(changes)


async def handle_admin_reset(request: web.Request) -> web.Response:
    """``POST /_mock/reset``: clear the log, marker counters, rate windows, quotas and result URLs,
    and every batch and Files API file."""
    state_of(request).reset()
    await reset_batches(request.app)
    return web.json_response({"ok": True})


class MockServer:
    """The mock on a real TCP port in the running event loop; an async context manager."""

    def __init__(self, config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.app = create_app(config)
        self._state: MockState = self.app[STATE_KEY]
        self._runner: web.AppRunner | None = None

    @property
    def config(self) -> MockConfig:
        """The live config: changing a field affects the next request."""
        return self._state.config

    @property
    def log(self) -> RequestLog:
        """The live request log (a list of dicts)."""
        return self._state.log

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` with the real port once started."""
        if self._runner is None:
            raise RuntimeError("the mock server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> MockServer:
        # handler_cancellation: a client that gives up on a hang or a slow reply frees its handler.
        runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MockServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class MockServerThread:
    """The mock in a daemon thread with its own event loop, for sync code and plain tests."""

    def __init__(self, config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = MockServer(config, host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def config(self) -> MockConfig:
        return self._server.config

    @property
    def log(self) -> RequestLog:
        return self._server.log

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> MockServerThread:
        if self._thread is not None:
            raise RuntimeError("the mock server thread is already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="batchfuse-mock", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._server.start())
            except BaseException as exc:
                self._error = exc
                return
            self._loop = loop
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            self._loop = None
            self._ready.set()
            loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None

    def configure(self, **changes: Any) -> None:
        """Change config fields from any thread (same names as :class:`MockConfig`, plus ``outage_s``)."""
        loop = self._loop
        if loop is None:
            apply_changes(self.config, changes)
            return

        async def apply() -> None:
            apply_changes(self.config, changes)

        asyncio.run_coroutine_threadsafe(apply(), loop).result()

    def faults(self, **changes: Any) -> dict[str, Any]:
        """Open/close fault windows from any thread (``outage=``, ``hold=``, ``hold_after=``,
        ``expire_results=True``); returns what is in force now, with ``held``: the requests
        waiting at the gate."""
        state = self._server.app[STATE_KEY]

        async def apply() -> dict[str, Any]:
            return apply_fault_changes(state, changes)

        if self._loop is None:
            return asyncio.run(apply())
        return asyncio.run_coroutine_threadsafe(apply(), self._loop).result()

    def requests(self, path_contains: str | None = None) -> list[dict[str, Any]]:
        """A copy of the request log, optionally only entries whose path contains a string."""
        return [dict(e) for e in list(self.log) if path_contains is None or path_contains in e["path"]]

    def __enter__(self) -> MockServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
