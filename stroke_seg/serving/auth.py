"""Logins for installs that need them: a users file of salted scrypt hashes, and an ASGI gate for a web app.

The users file (``STROKE_SEG_USERS_FILE``) holds one user a line, ``NAME:scrypt$N$r$p$SALT$HASH`` (salt and hash in
base64), written by ``python -m stroke_seg add-user NAME --users-file PATH``; a plain password is never stored.
Lines starting with ``#`` and blank lines are ignored. :class:`UsersFile` checks a name and password against it and
reads it again when it changes, so a user added or replaced takes effect without a restart.

:class:`AccessGate` is plain ASGI (no web framework imported): it refuses every request that carries no logged-in
user except the few paths a login page needs, and serves a result file only to the user it belongs to. The app
supplies how a request's user is found and which files belong to whom.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from stroke_seg.errors import StrokeSegError

__all__ = [
    "UsersFile",
    "AccessGate",
    "Uploads",
    "LogRedactor",
    "hash_password",
    "verify_password",
    "add_user",
    "read_users",
    "user_folder",
    "USER_NAME",
    "MIN_PASSWORD",
]

log = logging.getLogger(__name__)

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""Accepted user names: letters, digits and ``. _ @ -``, at most 64 characters, starting with a letter or digit."""

MIN_PASSWORD = 8
"""Shortest accepted password, in characters."""

# scrypt cost: 2**14 x 8 x 1 uses 16 MiB and ~50 ms a check (the stdlib's limit is 32 MiB by default).
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES, _HASH_BYTES = 16, 32


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted scrypt hash of ``password``: ``scrypt$N$r$p$SALT$HASH`` (base64 salt and hash)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_HASH_BYTES)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a hash made by :func:`hash_password` (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=64 * 1024**2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _check_name(name: str) -> None:
    if not USER_NAME.fullmatch(name or ""):
        raise StrokeSegError(
            f"user name {name!r}: expected 1-64 letters, digits or . _ @ - (starting with a letter or digit)"
        )


def read_users(path: str | os.PathLike) -> dict[str, str]:
    """``{name: stored hash}`` of a users file.

    Raises:
        StrokeSegError: the file is missing, or a line is not ``NAME:scrypt$...`` (its line number is named, never
            its content).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise StrokeSegError(f"users file {path.name}: expected a readable file, but {type(err).__name__}") from err
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, stored = line.partition(":")
        if not USER_NAME.fullmatch(name) or not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise StrokeSegError(
                f"users file {path.name}: expected NAME:scrypt$... on line {number} (made by `python -m stroke_seg "
                "add-user`), but it is not"
            )
        users[name] = stored
    return users


def add_user(path: str | os.PathLike, name: str, password: str) -> bool:
    """Add ``name`` to a users file, or replace its line; the file is created (mode 600) when missing.

    Returns:
        True when the user was new, False when its line was replaced.

    Raises:
        StrokeSegError: a name outside :data:`USER_NAME`, a password shorter than :data:`MIN_PASSWORD` characters,
            or an unreadable users file.
    """
    _check_name(name)
    if len(password) < MIN_PASSWORD:
        raise StrokeSegError(f"password for {name}: expected at least {MIN_PASSWORD} characters, but it has fewer")
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    read_users(path) if path.is_file() else None  # refuse to rewrite a file that is not a users file
    entry = f"{name}:{hash_password(password)}"
    kept = [line for line in lines if line.strip().partition(":")[0] != name]
    new = len(kept) == len(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(kept + [entry]) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new


def user_folder(name: str) -> str:
    """The folder name of a user's results: not the name itself (names stay out of URLs and paths)."""
    return "u-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:20]


class UsersFile:
    """The users of a users file, read again when the file changes; :meth:`check` is the app's login callable."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, str] = {}
        self._dummy = hash_password(secrets.token_hex(8))
        self._load()
        if not self._users:
            log.warning("users file %s lists no user: nobody can log in", self.path.name)

    def _load(self) -> dict[str, str]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            self._users = read_users(self.path)
            self._stamp = stamp
        return self._users

    @property
    def names(self) -> list[str]:
        return sorted(self._load())

    def check(self, name: str, password: str) -> bool:
        """True when ``name`` is listed and ``password`` is its password; unknown names take as long."""
        stored = self._load().get(name)
        ok = verify_password(password, stored or self._dummy)
        if not (ok and stored):
            log.warning("login refused for an unknown name or a wrong password")
            return False
        log.info("login: user %s", name)
        return True


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Uploads:
    """Which user uploaded which server file (thread-safe); filled by :class:`AccessGate` from upload responses."""

    MAX = 20_000
    """Entries kept; beyond it, entries whose file is gone are dropped."""

    def __init__(self) -> None:
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def add(self, user: str, paths: Iterable[str]) -> None:
        with self._lock:
            for path in paths:
                self._owners.setdefault(os.path.abspath(path), set()).add(user)
            if len(self._owners) > self.MAX:
                self._owners = {p: u for p, u in self._owners.items() if os.path.exists(p)}

    def owned_by(self, user: str, path: str | os.PathLike) -> bool:
        with self._lock:
            return user in self._owners.get(os.path.abspath(path), ())


class AccessGate:
    """ASGI middleware: with logins on, nothing is served to a request without a user, and no user's files to
    another.

    Args:
        app: the wrapped ASGI application.
        user_of: the logged-in user of a request's ASGI scope, or None.
        public: paths served without a login (the login page and its assets), exact or ending in ``*`` (a prefix).
        may_read: whether a user may fetch a file (absolute path) through a file route.
        uploads: where the paths an upload route returns are recorded as the uploading user's.
        file_route: the URL pieces that precede a file's path (``/file=``); the path follows them.
        upload_route: the path suffix of the upload route (POST; its JSON answer lists the stored paths).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_of: Callable[[Scope], str | None],
        public: Iterable[str],
        may_read: Callable[[str, Path], bool],
        uploads: Uploads | None = None,
        file_route: Iterable[str] = ("/file=", "/file/"),
        upload_route: str = "/upload",
    ) -> None:
        self.app = app
        self.user_of = user_of
        patterns = list(public)
        self.exact = {p for p in patterns if not p.endswith("*")}
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
        self.may_read = may_read
        self.uploads = uploads
        self.file_route = tuple(file_route)
        self.upload_route = upload_route

    def is_public(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)

    def requested_file(self, path: str) -> Path | None:
        """The absolute file path a file route asks for, or None for other routes."""
        for marker in self.file_route:
            at = path.find(marker)
            if at >= 0:
                return Path(os.path.abspath(unquote(path[at + len(marker) :])))
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        user = self.user_of(scope)
        if user is None:
            if not self.is_public(path):
                await self._refuse(scope, send, 401, "Not authenticated: log in first.")
                return
            await self.app(scope, receive, send)
            return
        wanted = self.requested_file(path)
        if wanted is not None and not self.may_read(user, wanted):
            log.warning("file refused: user %s asked for a file that is not theirs", user)
            await self._refuse(scope, send, 403, "File not allowed.")
            return
        if self.uploads is not None and scope.get("method") == "POST" and path.endswith(self.upload_route):
            send = self._recording(send, user)
        await self.app(scope, receive, send)

    def _recording(self, send: Send, user: str) -> Send:
        """``send``, also recording the paths of a successful upload answer as ``user``'s."""
        body: list[bytes] = []
        status = [0]

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and status[0] == 200:
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    with contextlib.suppress(ValueError):
                        paths = json.loads(b"".join(body))
                        if isinstance(paths, list) and all(isinstance(p, str) for p in paths):
                            self.uploads.add(user, paths)
            await send(message)

        return wrapped

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, text: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": text}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class LogRedactor(logging.Filter):
    """A logging filter that replaces the names of files in flight (uploads, which may carry a patient's name) by
    ``<upload>`` in every record, its arguments and its traceback; add it to the server's log handlers."""

    MIN_LENGTH = 4
    """Shorter names are left alone (replacing them would garble every line, and they identify nobody)."""

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hiding(self, paths: Iterable[str | os.PathLike | None]) -> Iterator[None]:
        """Redact these files' names (and full paths) while the block runs."""
        names = set()
        for p in paths:
            if p:
                names |= {str(p), os.path.basename(str(p))}
        names = {n for n in names if len(n) >= self.MIN_LENGTH}
        with self._lock:
            for n in names:
                self._names[n] = self._names.get(n, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for n in names:
                    self._names[n] -= 1
                    if self._names[n] <= 0:
                        del self._names[n]

    def redact(self, text: str) -> str:
        with self._lock:
            names = sorted(self._names, key=len, reverse=True)
        for n in names:
            text = text.replace(n, "<upload>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._names:
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True
