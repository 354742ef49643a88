"""Invite tokens for `mario-kit serve --invites FILE`: one per player, revocable, stored hashed.

The file (JSON, schema 1) maps the SHA-256 of each token to its player name, whether it is
revoked, and how many connections it may hold at once. The token itself is printed once by
`mario-kit invite add` and never stored. The server reads the file at every connection, so a
revocation applies to the next connection without a restart (and closes the token's open ones at
their next frame: `Invites.allowed`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Any

from mario_kit import UserError
from mario_kit.atomic import write_json_atomic

KIND, SCHEMA = "mario-kit-invites", 1
NAME_RE = re.compile(r"[^A-Za-z0-9_.\- ]")


def clean_name(name: str, limit: int = 32) -> str:
    """A player name as stored in episodes: letters, digits, space, . _ -; at most `limit`
    characters; never a path (no slash survives, and leading dots go)."""
    return NAME_RE.sub("", name).strip().lstrip(".")[:limit]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    from mario_kit.trust import read_json

    if not path.exists():
        return {"kind": KIND, "schema": SCHEMA, "invites": {}}
    data = read_json(path, max_bytes=8 << 20, what="invites file")
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("invites"), dict):
        raise UserError(f"{path} is not a mario-kit invites file")
    return data


def add(path: Path, player: str, max_connections: int = 1) -> str:
    """A new token for `player` (returned once; only its hash is stored)."""
    name = clean_name(player)
    if not name:
        raise UserError("--player needs a name (letters, digits, space, . _ -)")
    if max_connections < 1:
        raise UserError("--max-connections must be >= 1")
    data = _read(path)
    token = secrets.token_urlsafe(24)
    data["invites"][digest(token)] = {"player": name, "revoked": False, "max_connections": max_connections}
    write_json_atomic(path, data, sort_keys=True)
    return token


def revoke(path: Path, player: str) -> int:
    """Revoke every token of `player`; returns how many."""
    data = _read(path)
    n = 0
    for rec in data["invites"].values():
        if rec["player"] == clean_name(player) and not rec["revoked"]:
            rec["revoked"], n = True, n + 1
    if n == 0:
        raise UserError(f"no active invite for {player!r} in {path}")
    write_json_atomic(path, data, sort_keys=True)
    return n


def listing(path: Path) -> list[dict[str, Any]]:
    return [
        {"player": r["player"], "revoked": r["revoked"], "max_connections": r["max_connections"], "id": h[:8]}
        for h, r in _read(path)["invites"].items()
    ]


class Invites:
    """The server's view of the file: `check(token)` -> (digest, player) or None."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            _read(path)  # a broken file fails at start, in one line

    def check(self, token: str | None) -> tuple[str, str, int] | None:
        """(digest, player, max connections) of a valid, unrevoked token; None otherwise."""
        if self.path is None:
            return ("open", "", 1 << 30)
        if not token or len(token) > 128:
            return None
        d = digest(token)
        try:
            recs = _read(self.path)["invites"]
        except UserError:
            return None
        for h, rec in recs.items():
            if hmac.compare_digest(h, d):
                return None if rec.get("revoked") else (h, str(rec["player"]), int(rec.get("max_connections", 1)))
        return None

    def allowed(self, d: str) -> bool:
        """Whether the token with digest `d` is still valid (checked again while its player plays)."""
        if self.path is None or d == "open":
            return True
        try:
            rec = _read(self.path)["invites"].get(d)
        except UserError:
            return False
        return bool(rec) and not rec.get("revoked")
