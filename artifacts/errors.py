"""Why an upload was refused: one exception with the HTTP status, the audit outcome and a body naming the problem."""

from __future__ import annotations

from typing import Any

from replays.engine import FormatError


class UploadRefused(Exception):
    """An upload that is refused on purpose. Anything else escaping an upload is a bug (a 500)."""

    def __init__(
        self, detail: str, *, status: int, outcome: str = "failed", field: str | None = None, body: dict | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.outcome = outcome  # "failed" for a bad file or request, "denied" for a claim the key may not make
        self.body: dict[str, Any] = dict(body) if body else {"detail": detail}
        if field is not None:
            self.body.setdefault("field", field)
        self.field = self.body.get("field")
        self.audited = False  # set once the refusal has been written to the audit log

    def as_dict(self) -> dict[str, Any]:
        return dict(self.body)

    @classmethod
    def from_format_error(cls, exc: FormatError) -> UploadRefused:
        """The engine's WrongType → 415, TooLarge → 413, Invalid → 400; the body is the engine's own."""
        return cls(exc.detail, status=exc.status, body=exc.as_dict())


def too_large(limit: int) -> UploadRefused:
    return UploadRefused(
        f"file: the upload is larger than the limit of {limit} bytes (TRACEFLUX_MAX_UPLOAD_BYTES)",
        status=413,
        field="file",
    )
