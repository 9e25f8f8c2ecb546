"""The REST API of `msmn-serve`: `POST /v1/code` codes one note or a batch (JSON, or a FHIR R4 Bundle with
`Accept: application/fhir+json`), `GET /v1/model` describes the model, `GET /health` answers when it
serves; FastAPI adds the OpenAPI schema (`/openapi.json`) and its pages (`/docs`). Bearer tokens guard
every route but /health when a token file is given. Errors are 4xx with a message that names the field
at fault, never a note's text."""

import secrets
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from msmn.serving.batching import DynamicBatcher
from msmn.serving.fhir import bundle

FHIR_JSON = "application/fhir+json"


class CodingOptions(BaseModel):
    """The icd-coding pipeline's options (docs/pipeline.md); `evidence: false` returns codes without spans."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(None, ge=1, le=100_000, description="the K best codes instead of the threshold")
    threshold: float | None = Field(None, allow_inf_nan=False, description="default: the checkpoint's")
    review_threshold: float | None = Field(None, allow_inf_nan=False,
                                           description="codes between it and the threshold come with review: true")
    candidates: Literal["all"] | None = Field(None, description="rank every candidate code the checkpoint carries")
    operating_point: Literal["best_map", "unseen"] | None = None
    evidence: bool = True
    num_evidence: int = Field(3, ge=1, le=20)


class CodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str] = Field(description="a note, or a list of notes")
    ids: list[str] | None = Field(None, description="an id per note (default: 1, 2, ...), for FHIR's subjects")
    parameters: CodingOptions = CodingOptions()


@dataclass
class Limits:
    max_note_chars: int = 200_000
    max_notes: int = 64


class InputProblem(Exception):
    """A request the API refuses: its status, the field at fault and the message (never a note's text)."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def checked_notes(request: CodeRequest, limits: Limits) -> tuple[list[str], list[str]]:
    """(notes, their ids) of a request within the limits, or an InputProblem naming the field."""
    notes = [request.inputs] if isinstance(request.inputs, str) else request.inputs
    if not notes:
        raise InputProblem(422, "inputs", "give a note, or a list of at least one note")
    if len(notes) > limits.max_notes:
        raise InputProblem(413, "inputs", f"{len(notes)} notes; this server codes at most {limits.max_notes} per request")
    for index, note in enumerate(notes):
        if len(note) > limits.max_note_chars:
            raise InputProblem(413, f"inputs[{index}]", f"{len(note):,} characters; this server codes notes of up to "
                                                        f"{limits.max_note_chars:,}")
    ids = request.ids or [str(number) for number in range(1, len(notes) + 1)]
    if len(ids) != len(notes):
        raise InputProblem(422, "ids", f"{len(ids)} ids for {len(notes)} notes")
    return notes, ids


def pipeline_options(options: CodingOptions) -> dict:
    chosen = options.model_dump(exclude={"evidence"}, exclude_none=True)
    if not options.evidence:
        chosen["num_evidence"] = 0
    return chosen


def create_app(batcher: DynamicBatcher, model: dict, label_system: str, tokens: list[str], limits: Limits) -> FastAPI:
    """The service over `batcher`'s pipeline; `model` is what GET /v1/model answers."""
    app = FastAPI(title="MSMN ICD coding", version="1", description=__doc__.split("\n\n")[0])
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not tokens:
            return
        given = credentials.credentials if credentials else ""
        if not any(secrets.compare_digest(given.encode(), token.encode()) for token in tokens):
            raise InputProblem(401, "Authorization", "a valid bearer token is needed (Authorization: Bearer TOKEN)")

    @app.exception_handler(InputProblem)
    async def refused(request: Request, problem: InputProblem):
        headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
        return JSONResponse({"detail": [{"loc": [problem.field], "msg": problem.message}]}, problem.status, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):  # e.g. a body that is not JSON, a wrong path
        field = {400: "body", 404: "path", 405: "method"}.get(error.status_code, "request")
        return JSONResponse({"detail": [{"loc": [field], "msg": str(error.detail)}]}, error.status_code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):  # without the input: it may be a note
        return JSONResponse({"detail": [{"loc": list(item["loc"]), "msg": item["msg"]} for item in error.errors()]}, 422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", dependencies=[Depends(authorized)])
    async def describe() -> dict:
        return model

    @app.post("/v1/code", dependencies=[Depends(authorized)],
              responses={200: {"content": {FHIR_JSON: {}}, "description": "codes per note, or a FHIR Bundle"}})
    async def code(body: CodeRequest, request: Request):
        notes, ids = checked_notes(body, limits)
        try:
            answers = await batcher.code(notes, pipeline_options(body.parameters))
        except ValueError as error:  # the pipeline's message names the option
            raise InputProblem(422, "parameters", str(error)) from None
        if FHIR_JSON in request.headers.get("accept", ""):
            return JSONResponse(bundle(list(zip(ids, (answer["codes"] for answer in answers))), label_system),
                                media_type=FHIR_JSON)
        return {"model": model["sha256"], "results": [{"id": note_id, **answer} for note_id, answer in zip(ids, answers)]}

    return app
