"""The errors a format check raises. Each names what was wrong and where; callers map the class to a status code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# How many bad line numbers an error lists; the rest are only counted, so a bad 2-million-line file stays a short error.
MAX_LISTED_LINES = 20


class FormatError(Exception):
    """A file is not an acceptable bundle or snapshot. Never raised for a bug: a bug is any other exception.

    `detail` is the full sentence for a person; `field` the JSON path of the offending value (`manifest.window.end`)
    when there is one; `lines` the first bad line numbers of signals.jsonl and `more` how many further lines were bad.
    """

    status = 400
    code = "invalid"

    def __init__(self, detail: str, *, field: str | None = None, lines: Sequence[int] = (), more: int = 0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.lines = list(lines)
        self.more = more

    def as_dict(self) -> dict[str, Any]:
        """The body of the HTTP error response (STYLE.md, "Errors name the problem")."""
        body: dict[str, Any] = {"detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        if self.lines:
            body["lines"] = list(self.lines)
            body["more_lines"] = self.more
        return body

    def __str__(self) -> str:
        return self.detail


class WrongType(FormatError):
    """The file is not the declared kind at all (JSON given as a bundle, random bytes, a gzip that is no tar): 415."""

    status = 415
    code = "wrong_type"


class TooLarge(FormatError):
    """Over a size limit: members, uncompressed bytes, compression ratio, a JSON document's size: 413."""

    status = 413
    code = "too_large"


class Invalid(FormatError):
    """The right kind of file with wrong content: unsafe archive members, schema errors, bad signal lines: 400."""

    status = 400
    code = "invalid"
