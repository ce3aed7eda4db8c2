"""One batch line's outcome, made exactly as an online ``generateContent`` reply is made.

Each request of a batch goes through the online code (``gemini_request.parse_request``,
``fault_reply``, ``success_reply``) and the same ``[[mock:FAULT*N]]`` marker counters and seeded
rates; an answer that would have been an HTTP error becomes the line's ``error``: a
``google.rpc.Status`` (``code`` is the gRPC code, as in every ``Status``: SDK ``types.JobError``
has ``code``/``message``/``details``) plus ``status``, the code's name, which the online error
envelope also carries.
"""

from __future__ import annotations

import json
from typing import Any

from batchfuse.model_catalog import ModelEntry

from .gemini import STATUS_NAMES, fault_reply, success_reply
from .gemini_request import parse_request
from .models import prompt_tokens
from .state import MockState
from .validation import InvalidRequest

#: google.rpc.Code numbers of the statuses a line can end with.
GRPC_CODES = {
    "CANCELLED": 1,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
}
#: Transport faults have no HTTP answer to copy; in a batch they surface as a line's error.
_TRANSPORT = {
    "hang": ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    "reset": ("INTERNAL", "Internal error encountered."),
    "truncate": ("INTERNAL", "Internal error encountered."),
}


def line_error(status: str, message: str) -> dict[str, Any]:
    return {"code": GRPC_CODES.get(status, 2), "message": message, "status": status}


async def line_outcome(
    state: MockState, spec: ModelEntry, request: Any, files: Any, log_path: str
) -> dict[str, Any]:
    """``{"response": GenerateContentResponse}`` or ``{"error": Status}`` for one request."""
    entry: dict[str, Any] = {
        "t": None, "received": None, "method": "BATCH", "path": log_path, "api": "gemini-batch", "model": spec.name,
        "status": None, "fault": None, "prompt": None, "n_images": 0, "key_ok": True,
    }
    try:
        if not isinstance(request, dict):
            raise InvalidRequest("Invalid JSON payload received. Expected an object at 'request'.")
        parsed = await parse_request(request, spec, state.references, files.resolver())
    except InvalidRequest as exc:
        status = STATUS_NAMES.get(exc.status, "INVALID_ARGUMENT")
        return _logged(state, entry, exc.status, None, {"error": line_error(status, exc.message)})
    entry["prompt"], entry["n_images"] = parsed.prompt, len(parsed.refs)
    state.faults.follow_seed(state.config.seed)
    fault = state.faults.marker_fault(parsed.prompt, parsed.markers) if parsed.markers else None
    if fault is None:
        fault = state.faults.random_fault(state.config)
    if fault == "perday":
        fault = "429"  # a batch has its own quota; the marker still fails the line
    if fault in _TRANSPORT:
        status, message = _TRANSPORT[fault]
        return _logged(state, entry, None, fault, {"error": line_error(status, message)})
    count = prompt_tokens(parsed.prompt, len(parsed.refs))
    reply = fault_reply(spec.name, parsed, fault, count) or await success_reply(state, spec, parsed, count)
    assert isinstance(reply.body, bytes)
    body = json.loads(reply.body)
    if reply.status != 200:
        error = body["error"]
        return _logged(state, entry, reply.status, fault, {"error": line_error(error["status"], error["message"])})
    return _logged(state, entry, 200, fault, {"response": body})


def _logged(
    state: MockState, entry: dict[str, Any], status: int | None, fault: str | None, outcome: dict[str, Any]
) -> dict[str, Any]:
    state.record(entry, status, fault)
    return outcome
