"""The app's optional login (``STROKE_SEG_USERS_FILE``): Gradio's login form, a gate on every route, per-user results.

Off by default. With a users file (``python -m stroke_seg add-user NAME --users-file PATH``),
:meth:`Login.launch_kwargs` turns on Gradio's login with :meth:`stroke_seg.serving.auth.UsersFile.check` and wraps the
server in :class:`stroke_seg.serving.auth.AccessGate`: a request without a logged-in user gets 401 on every route but
the login page and its assets; a result is written under the user's own folder of the cache (:meth:`Login.job_owner`)
and a file under the cache or Gradio's upload folder is served only to the user it belongs to. Gradio's MCP server has
no login of its own, so it is not started while logins are on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import cookie_parser

from stroke_seg.errors import StrokeSegError
from stroke_seg.io.digest import file_sha256
from stroke_seg.serving.auth import AccessGate, LogRedactor, Uploads, UsersFile, user_folder
from stroke_seg.serving.cache import ResultCache

log = logging.getLogger("stroke_seg.app")

PUBLIC = (
    "/",
    "/login",
    "/login/",
    "/logout",
    "/config",
    "/config/",
    "/gradio_api/login_check",
    "/gradio_api/login_check/",
    "/gradio_api/startup-events",
    "/favicon.ico",
    "/manifest.json",
    "/theme.css",
    "/gradio_api/theme.css",
    "/assets/*",
    "/static/*",
    "/svelte/*",
)
"""What the login page needs without a login: the page itself (Gradio answers it with the login form only), the form's
post, Gradio's login check (401 itself), the start-up call ``launch`` makes once on loopback (idempotent) and static
assets. Everything else needs a logged-in user."""


class Login:
    """The app's login state: users, the uploads each made, per-user result caches and the log redactor.

    Args:
        users: the users file, or None (logins off: everything as without this class).
        cache: the app's result cache; with logins, each user's results go to a folder of it.
        uploads_dir: Gradio's upload/cache folder (files there are served only to the user who uploaded them, or to
            anyone when they are copies of the bundled examples).
        examples_dir: the bundled examples (public).
    """

    def __init__(
        self, users: UsersFile | None, cache: ResultCache, uploads_dir: str | os.PathLike, examples_dir: Path
    ) -> None:
        self.users = users
        self.cache = cache
        self.uploads_dir = Path(uploads_dir).resolve()
        self.examples_dir = examples_dir
        self.uploads = Uploads()
        self.redactor = LogRedactor()
        self._caches: dict[str, ResultCache] = {}
        self._examples: set[tuple[int, str]] | None = None

    @classmethod
    def from_env(cls, cache: ResultCache, uploads_dir: str | os.PathLike, examples_dir: Path) -> Login:
        path = os.environ.get("STROKE_SEG_USERS_FILE")
        users = UsersFile(path) if path else None
        if users is not None:
            log.info("logins on: %d users in %s", len(users.names), Path(path).name)
        return cls(users, cache, uploads_dir, examples_dir)

    @property
    def on(self) -> bool:
        return self.users is not None

    def job_owner(self, request: Any) -> tuple[str | None, ResultCache | None]:
        """(user, that user's result cache) of a request; (None, None) when logins are off.

        Raises:
            StrokeSegError: logins are on and the request has no user (the gate lets none through).
        """
        if not self.on:
            return None, None
        user = getattr(request, "username", None)
        if not user:
            raise StrokeSegError("login: expected a logged-in user, but this request has none; log in first")
        if user not in self._caches:
            self._caches[user] = ResultCache(self.cache.root / user_folder(user), self.cache.ttl_s, self.cache.keep_s)
        return user, self._caches[user]

    @staticmethod
    def user_of(scope: dict) -> str | None:
        """The user Gradio logged in for this request (its login cookie), or None."""
        app = scope.get("app")
        tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
        if tokens is None or cookie_id is None:
            return None
        header = next((v for k, v in scope.get("headers", ()) if k == b"cookie"), b"")
        cookies = cookie_parser(header.decode("latin-1"))
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        return tokens.get(token) if token else None

    def _is_example(self, path: Path) -> bool:
        if self._examples is None:
            self._examples = {
                (p.stat().st_size, file_sha256(p))
                for p in self.examples_dir.rglob("*")
                if p.is_file() and not p.is_symlink()
            }
        try:
            size = path.stat().st_size
        except OSError:
            return False
        return any(size == s for s, _ in self._examples) and (size, file_sha256(path)) in self._examples

    def may_read(self, user: str, path: Path) -> bool:
        """A result under the cache only for its user; a file in Gradio's upload folder only for whoever uploaded it
        (or anyone when it is a bundled example's copy); other files as Gradio decides."""
        resolved = path.resolve()
        root = self.cache.root.resolve()
        if resolved.is_relative_to(root):
            parts = resolved.relative_to(root).parts
            return len(parts) > 1 and parts[0] == user_folder(user)
        if resolved.is_relative_to(self.uploads_dir):
            return self.uploads.owned_by(user, path) or self.uploads.owned_by(user, resolved) or self._is_example(path)
        return True

    def launch_kwargs(self) -> dict[str, Any]:
        """What ``demo.launch`` adds for logins: nothing when they are off."""
        if not self.on:
            return {}
        gate = Middleware(AccessGate, user_of=self.user_of, public=PUBLIC, may_read=self.may_read, uploads=self.uploads)
        return {
            "auth": self.users.check,
            "auth_message": "stroke-seg (research use only): log in with the account your administrator gave you.",
            "app_kwargs": {"middleware": [gate]},
        }
