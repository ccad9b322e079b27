"""The one exception tree of raftsched, with stable error codes.

    RaftschedError                    code            HTTP
    ├── ValidationError               validation_error 400   (names the field)
    ├── Unauthorized                  unauthorized     401
    ├── Forbidden                     forbidden        403
    │   ├── ForbiddenOrigin           forbidden_origin       (a browser's cross-origin request)
    │   └── ForbiddenHost             forbidden_host         (a foreign Host: DNS rebinding)
    ├── NotFound                      not_found        404
    ├── AlreadyExists                 already_exists   409
    ├── VersionMismatch               version_mismatch 412
    ├── BodyTooLarge                  body_too_large   413
    ├── UnsupportedMediaType          unsupported_media_type 415
    ├── IdempotencyMismatch           idempotency_mismatch 422
    ├── NoEligibleNode                no_eligible_node 422   (no live node may run the job)
    ├── UnknownChannel                unknown_channel  422   (a notify rule names no channel)
    ├── Rejected                      rejected         409   (the state refused a command)
    ├── Unavailable                   unavailable      503   (not applied; safe to retry)
    │   ├── NoLeader
    │   └── NoQuorum
    ├── Indeterminate                 indeterminate    504   (may have applied)
    └── ConfigError                   (exit status 2; names section and key)

The replicated state never raises: it returns rejections as values, which the
API maps onto these classes by their `code`.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "BodyTooLarge",
    "ConfigError",
    "Forbidden",
    "ForbiddenHost",
    "ForbiddenOrigin",
    "IdempotencyMismatch",
    "Indeterminate",
    "NoEligibleNode",
    "NoLeader",
    "NoQuorum",
    "NotFound",
    "RaftschedError",
    "Rejected",
    "Unauthorized",
    "Unavailable",
    "UnknownChannel",
    "UnsupportedMediaType",
    "ValidationError",
    "VersionMismatch",
    "error_for_code",
    "quoted",
]

QUOTE_CHARS = 200  # at most this much of a rejected value is shown in a message
MAX_MESSAGE_CHARS = 1000  # a message is never longer (a net under `quoted`)


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` for a message, cut to `limit` characters: a rejected value can be megabytes."""
    text = repr(value[: limit + 1] if isinstance(value, str | bytes) else value)
    return text if len(text) <= limit else f"{text[:limit]}... ({_size(value)})"


def _size(value: object) -> str:
    return f"{len(value)} characters" if isinstance(value, str) else "cut"


class RaftschedError(Exception):
    """Base class: every error we raise on purpose has a code and an HTTP status."""

    code = "internal"
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class ValidationError(RaftschedError):
    code, status = "validation_error", 400


class Unauthorized(RaftschedError):
    code, status = "unauthorized", 401


class Forbidden(RaftschedError):
    """Refused whoever asks: a browser's cross-site request, a foreign `Host`."""

    code, status = "forbidden", 403


class ForbiddenOrigin(Forbidden):
    code = "forbidden_origin"


class ForbiddenHost(Forbidden):
    code = "forbidden_host"


class NotFound(RaftschedError):
    code, status = "not_found", 404


class AlreadyExists(RaftschedError):
    code, status = "already_exists", 409


class Rejected(RaftschedError):
    code, status = "rejected", 409


class VersionMismatch(RaftschedError):
    code, status = "version_mismatch", 412


class BodyTooLarge(RaftschedError):
    code, status = "body_too_large", 413


class UnsupportedMediaType(RaftschedError):
    code, status = "unsupported_media_type", 415


class IdempotencyMismatch(RaftschedError):
    code, status = "idempotency_mismatch", 422


class NoEligibleNode(RaftschedError):
    """No live node may run the job (route tags, run_tasks, the nodes' fences, secrets); `field`
    names what in the job, the message the node setting that refuses it. `?force=true` accepts."""

    code, status = "no_eligible_node", 422


class UnknownChannel(RaftschedError):
    """A notify rule names a channel the cluster does not have; `?force=true` accepts it (its
    alerts are dropped until the channel exists)."""

    code, status = "unknown_channel", 422


class Unavailable(RaftschedError):
    """Not applied: the caller may retry (after `retry_after_s`)."""

    code, status = "unavailable", 503
    retry_after_s = 1


class NoLeader(Unavailable):
    pass


class NoQuorum(Unavailable):
    pass


class Indeterminate(RaftschedError):
    """The command may or may not have applied: retry with the same request id to learn which."""

    code, status = "indeterminate", 504


class ConfigError(RaftschedError):
    """A bad configuration: the message names the section and key."""

    code, status = "config_error", 400

    def __init__(self, section: str, key: str | None, message: str) -> None:
        where = f"[{section}] {key}" if key else f"[{section}]"
        super().__init__(f"{where}: {message}", field=f"{section}.{key}" if key else section)
        self.section = section
        self.key = key


_BY_CODE: dict[str, type[RaftschedError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        Unauthorized,
        NotFound,
        AlreadyExists,
        Rejected,
        VersionMismatch,
        BodyTooLarge,
        IdempotencyMismatch,
        NoEligibleNode,
        UnknownChannel,
        Unavailable,
        Indeterminate,
    )
}


def error_for_code(code: str, message: str, field: str | None = None) -> RaftschedError:
    """Turn a rejection value from the state machine into the matching exception."""
    return _BY_CODE.get(code, Rejected)(message, field=field)
