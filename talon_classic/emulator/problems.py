"""Answers in Talon.One's shapes: its error body (:class:`Problem`) and JSON answers.

An endpoint raises a :class:`Problem` anywhere; the app turns it into the
answer, so a refusal deep inside a check needs no plumbing back up.
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response


class Problem(Exception):
    """An error answer in Talon.One's shape.

    ``message`` says what is wrong (and names the item), ``title`` is the
    short kind of error, ``details`` what to do or more context, ``pointer``
    the JSON pointer into the request body (``/customerProfiles/3/attributes/x``).
    """

    def __init__(self, status: int, message: str, *, title: str = "", details: str = "",
                 pointer: str = "", parameter: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title or message
        self.details = details or message
        self.pointer = pointer
        self.parameter = parameter
        self.headers = headers or {}

    def response(self) -> Response:
        """``{"message", "errors": [{"title", "details", "source"}], "StatusCode"}``."""
        source = {"pointer": self.pointer}
        if self.parameter:
            source["parameter"] = self.parameter
        body = {"message": self.message,
                "errors": [{"title": self.title, "details": self.details, "source": source}],
                "StatusCode": self.status}
        return Response(json.dumps(body), self.status, self.headers,
                        content_type="application/json")


def bad_request(message: str, pointer: str = "", details: str = "",
                parameter: str = "") -> Problem:
    """A 400 naming what is wrong and where (``pointer`` into the body, or a query ``parameter``)."""
    return Problem(400, message, title="Bad request", details=details, pointer=pointer,
                   parameter=parameter)


def json_response(data: Any, status: int = 200) -> Response:
    """``data`` as a JSON answer."""
    return Response(json.dumps(data), status, content_type="application/json")
