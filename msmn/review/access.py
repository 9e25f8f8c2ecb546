"""Who may use the review app and what it leaves behind: logins (checked, slowed after failures, logged
without passwords), Gradio's request errors logged without the inputs they quote, the app's temporary
folder (claimed while it runs, swept once its app is gone)."""

import contextvars
import fcntl
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import NamedTuple

from datasets_scripts import InputError


ROLES = ("coder", "admin")


class Login(NamedTuple):
    user: str
    password: str
    role: str = "coder"


def logins(pairs: list[str], auth_file: Path | None) -> list[Login]:
    """The logins of --auth and of the lines of --auth-file (blank lines and # comments skipped): USER:PASSWORD,
    or USER:PASSWORD:ROLE where ROLE is coder (the default) or admin (a password may hold colons)."""
    sources = [("--auth", pair) for pair in pairs]
    if auth_file is not None:
        try:
            lines = auth_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"--auth-file {auth_file}: cannot be read ({type(error).__name__}).") from None
        sources += [(f"--auth-file {auth_file}, line {number}", line.strip()) for number, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#")]
        if not sources:
            raise InputError(f"--auth-file {auth_file}: holds no USER:PASSWORD line.")
    found = []
    for source, pair in sources:
        user, colon, password = pair.partition(":")
        secret, _, role = password.rpartition(":")
        password, role = (secret, role) if secret and role in ROLES else (password, "coder")
        if not (user and colon and password):  # the message never repeats the line: it may hold a password
            raise InputError(f"{source}: not USER:PASSWORD or USER:PASSWORD:ROLE (a user name, a colon, a password).")
        found.append(Login(user, password, role))
    return found


CLIENT_ADDRESS = contextvars.ContextVar("client_address", default="unknown")


class ClientAddress:
    """ASGI middleware: remembers the address of the client being served, for the login check."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("client"):
            CLIENT_ADDRESS.set(scope["client"][0])
        await self.app(scope, receive, send)


class LoginGuard:
    """Checks the app's logins. A failed login is logged (user and address, never the password); after
    FREE_FAILURES failures in a row for a user or from an address, both are refused without a check for
    2, 4, 8 … up to MAX_WAIT seconds after each further failure. A success clears the user's and the
    address's count."""

    FREE_FAILURES = 4
    MAX_WAIT = 300.0

    def __init__(self, pairs: list[Login]):
        self.passwords = {login.user: login.password for login in pairs}
        self.roles = {login.user: login.role for login in pairs}
        self.failures = {}  # user or address → (failures in a row, time of the last)
        self.lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        count, last = self.failures.get(key, (0, 0.0))
        if count <= self.FREE_FAILURES:
            return 0.0
        return max(0.0, last + min(2.0 ** (count - self.FREE_FAILURES), self.MAX_WAIT) - time.monotonic())

    def check(self, user: str, password: str, address: str) -> bool:
        with self.lock:
            keys = (f"user {user!r}", f"address {address}")
            wait = max(self.wait(key) for key in keys)
            correct = wait == 0 and secrets.compare_digest(self.passwords.get(user, "").encode(), password.encode())
            if correct and user in self.passwords:
                for key in keys:
                    self.failures.pop(key, None)
                return True
            for key in keys:
                self.failures[key] = (self.failures.get(key, (0, 0.0))[0] + 1, time.monotonic())
            reason = f"refused for {wait:.0f} s more after repeated failures" if wait else "wrong user or password"
        print(f"msmn-app: failed login for user {user!r} from {address}: {reason}", file=sys.stderr, flush=True)
        return False

    async def login(self, user: str, password: str) -> bool:
        """Gradio's login check (a coroutine function, which Gradio awaits), for the client being served."""
        return self.check(user, password, CLIENT_ADDRESS.get())


class QuietTracebacks:
    """Stands for the `traceback` module inside Gradio's request handling: a failed request is logged by
    its exception's type and where it was raised, never its message (Gradio's messages quote a request's
    inputs: the note)."""

    def __getattr__(self, name):
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs):
        error = sys.exc_info()[1]
        frames = traceback.extract_tb(error.__traceback__) if error is not None else []
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        print(f"msmn-app: a request failed: {type(error).__name__}{where} (its message is not logged: it may quote "
              "the note)", file=sys.stderr, flush=True)


def silence_gradio_inputs() -> None:
    """Gradio's request errors are logged without their messages (`QuietTracebacks`)."""
    import gradio.queueing
    import gradio.route_utils
    import gradio.routes
    import gradio.utils

    for module in (gradio.queueing, gradio.route_utils, gradio.routes, gradio.utils):
        module.traceback = QuietTracebacks()


APP_FOLDER_PREFIX = "msmn-app-"


def claim_app_folder() -> tuple[Path, int]:
    """(a new temporary folder for the app's files, the descriptor of its lock, held while the app runs).
    Folders that an app killed without clean-up left (their lock free) are removed first: they hold notes."""
    for stale in Path(tempfile.gettempdir()).glob(f"{APP_FOLDER_PREFIX}*"):
        if stale.is_dir() and (stale / "lock").is_file() and not holds_lock(stale / "lock"):
            shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=APP_FOLDER_PREFIX))
    descriptor = os.open(folder / "lock.new", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(folder / "lock.new", folder / "lock")  # named "lock" only once held: no sweeper sees it free
    return folder, descriptor


def holds_lock(path: Path) -> bool:
    """Whether a running process holds the lock file `path` (or another sweeper just removed it)."""
    try:
        descriptor = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)


