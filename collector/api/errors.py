"""What every /v1 router shares: the id path parameters, the documented error answers (so
the OpenAPI document lists each 401, 404 and 422), and the validation-error handler."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field

from collector.api.schemas import ACCOUNT_NUMBER_REFUSED, Problem

MAX_ID = 2**63 - 1
"""Ids are bigint: a larger number is refused as invalid (422), not looked up (a 500)."""

_CANONICAL_ID = re.compile(r"[1-9][0-9]{0,18}")
"""An id as the API writes it: ASCII digits, no sign, no spaces, no leading zero, at most 19
digits (bigint's width). Python's int() would also take "007", "+7", " 7", "7_0" and other
scripts' digits, and so would pydantic's lax mode: each would name lease 7 under another
spelling, which caches, logs and rate limits keyed by the path would take for another id."""


def _canonical_id(value: object) -> object:
    if isinstance(value, str) and _CANONICAL_ID.fullmatch(value) is None:
        raise ValueError("must be a positive integer written in digits only, without a leading 0")
    return value


PathId = Annotated[int, Field(gt=0, le=MAX_ID), BeforeValidator(_canonical_id)]
"""The type of every id in a /v1 path (which reaches it as text): one rule for all routes."""

CustomerId = Annotated[PathId, Path(description="The customer's id.")]
LeaseId = Annotated[PathId, Path(description="The lease's id.")]


class FieldError(BaseModel):
    """One reason FastAPI's request validation gave."""

    loc: list[str | int]
    msg: str
    type: str


class InvalidRequest(BaseModel):
    """FastAPI's own answer to a request that does not match the schema (its ``detail`` is a
    list, where our own 422 answers, :class:`Problem`, carry a sentence)."""

    detail: list[FieldError]


def error_responses(
    *, not_found: str | None = None, unprocessable: str, body: bool = False
) -> dict[int | str, Any]:
    """The ``responses=`` of a /v1 route: 401 always, 404 when ``not_found`` says what is
    missing, 422 described by ``unprocessable``, and 400 for a route that takes a ``body``."""
    answers: dict[int | str, Any] = {
        401: {"model": Problem, "description": "Missing or invalid bearer token."},
        # Both shapes can answer 422: a request the schema refuses, or a rule the handler enforces.
        422: {"model": Problem | InvalidRequest, "description": unprocessable},
    }
    if not_found is not None:
        answers[404] = {"model": Problem, "description": not_found}
    if body:
        # FastAPI's own answer to a body that is not JSON at all, before any validation.
        answers[400] = {"model": Problem, "description": "The body is not valid JSON."}
    return answers


async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """422 for a request the schema refuses, without echoing its input back: the input may
    hold a secret the client should not have sent, or text that cannot be encoded (a lone
    surrogate made FastAPI's default handler fail with a 500)."""
    assert isinstance(exc, RequestValidationError)
    for error in exc.errors():
        if error.get("type") == ACCOUNT_NUMBER_REFUSED:
            # A sentence, like the handlers' own 422s: the number itself is never repeated.
            return JSONResponse(
                {"detail": str(error.get("msg", "")), "code": ACCOUNT_NUMBER_REFUSED},
                status_code=422,
            )
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
