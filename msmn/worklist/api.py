"""The worklist's HTTP API, beside its page in `msmn-app MODEL --db ...`: the app's logins as HTTP basic
auth (the user name is the coder; failures slowed as on the page), one route per operation of the store.
A note someone else holds answers 409, a bad decision 422; messages name notes by id, never quote them.

    POST /api/worklist/next                     the coder's note (claimed), or 204 when the queue is empty
    POST /api/worklist/notes/{pk}/submit        {"accepted": [...], "rejected": [...], "added": [...]}
    POST /api/worklist/notes/{pk}/release       back to the queue
    POST /api/worklist/notes/{pk}/skip          back to the queue, not offered to this coder again
    GET  /api/worklist/notes/{pk}/history       the note's audit events
    GET  /api/worklist/report                   acceptance figures (admins)
"""

import dataclasses

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from datasets_scripts import InputError
from msmn.review.access import LoginGuard
from msmn.worklist.analytics import acceptance_report
from msmn.worklist.store import ClaimError, Worklist


class Decisions(BaseModel):
    accepted: list[str] = Field(default_factory=list, max_length=1000)
    rejected: list[str] = Field(default_factory=list, max_length=1000)
    added: list[str] = Field(default_factory=list, max_length=1000)


def worklist_api(worklist: Worklist, guard: LoginGuard) -> FastAPI:
    app = FastAPI(title="MSMN coding worklist", openapi_url="/api/worklist/openapi.json", docs_url=None,
                  redoc_url=None)
    basic = HTTPBasic()

    def coder(request: Request, credentials: HTTPBasicCredentials = Depends(basic)) -> str:
        address = request.client.host if request.client else "unknown"
        if not guard.check(credentials.username, credentials.password, address):
            raise HTTPException(401, "wrong user or password", headers={"WWW-Authenticate": "Basic"})
        return credentials.username

    def admin(user: str = Depends(coder)) -> str:
        if guard.roles.get(user) != "admin":
            raise HTTPException(403, f"{user} is a coder; the report is for admins (role admin in the login file).")
        return user

    @app.exception_handler(ClaimError)
    def claimed(_request, error: ClaimError):
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(InputError)
    def refused(_request, error: InputError):
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.post("/api/worklist/next")
    def next_note(user: str = Depends(coder)):
        note = worklist.claim_next(user)
        return Response(status_code=204) if note is None else dataclasses.asdict(note)

    @app.post("/api/worklist/notes/{note_pk}/submit")
    def submit(note_pk: int, decisions: Decisions, user: str = Depends(coder)):
        worklist.submit(user, note_pk, decisions.accepted, decisions.rejected, decisions.added)
        return {"submitted": note_pk}

    @app.post("/api/worklist/notes/{note_pk}/release")
    def release(note_pk: int, user: str = Depends(coder)):
        worklist.release(user, note_pk)
        return {"released": note_pk}

    @app.post("/api/worklist/notes/{note_pk}/skip")
    def skip(note_pk: int, user: str = Depends(coder)):
        worklist.release(user, note_pk, skip=True)
        return {"skipped": note_pk}

    @app.get("/api/worklist/notes/{note_pk}/history")
    def history(note_pk: int, _user: str = Depends(coder)):
        return worklist.history(note_pk)

    @app.get("/api/worklist/report")
    def report(_user: str = Depends(admin)):
        return {name: table.astype(object).where(table.notna(), None).to_dict(orient="records")  # NaN: null
                for name, table in acceptance_report(worklist.engine).items()}

    return app
