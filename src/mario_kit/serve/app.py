"""`mario-kit serve`: people play in a browser, the server records (Starlette on uvicorn).

One static page (`static/`, no build step, nothing from elsewhere) and a WebSocket per player at
`/ws?name=NAME[&token=TOKEN]`. Each player gets an emulator in a thread of its own, recording through
the human collector's loop (`player.BrowserPlayer`). The page sends JSON text messages:
  {"t": "keys", "held": ["right", "A"], "c": <page clock, ms>}   the buttons held now
  {"t": "cmd", "cmd": "start" | "pause" | "discard" | "next" | "quit"}
and receives binary frames (`player.encode_frame`) and JSON events ({"t": "hello" | "saved" |
"discarded" | "bye"}, or {"t": "refused", "why": ...} before the server closes a connection it does
not admit: 4401 without a valid invite, 1013 when full; the page shows why, which a close before
the handshake would hide). A message over `max_message` bytes closes that connection with 1009
(as the WebSocket layer itself does for larger ones), anything malformed (non-finite numbers
included) or more than `max_rate` messages a second with 1008, never the server. A browser page
from another origin (any site the user visits can open ws://127.0.0.1:...) is refused at the
handshake unless `allow_origins` names it: only the server's own page, or a reverse proxy's. `/config.json`
tells the page whether it needs an invite link. The server's terminal gets a line when a player
joins, leaves or saves an episode, and a summary when it stops.

Guards: binds to 127.0.0.1 unless told otherwise; with `invites` a token is required (`invites.py`)
and its player name is used; otherwise the name is the one given, cleaned (`invites.clean_name`);
at most `max_players` at once, and each token at most its own number of connections.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mario_kit import UserError
from mario_kit.collectors.collect import CollectConfig, record_session
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import check_output_dir
from mario_kit.emulator import parse_levels
from mario_kit.serve.invites import Invites, clean_name
from mario_kit.serve.player import BUTTONS, COMMANDS, BrowserPlayer

STATIC = Path(__file__).parent / "static"
POLICY_VIOLATION, TOO_BIG, TRY_LATER, UNAUTHORIZED, FORBIDDEN = 1008, 1009, 1013, 4401, 4403
MAX_CLOCK = 1e15  # a page's clock (performance.now(), ms) is below this; NaN and infinities are not


def refusal(code: int, token: str | None) -> str:
    """What the page and the terminal say about a connection that is not admitted."""
    if code == TRY_LATER:
        return "the server is full (or this invite is in use): try again later"
    if not token:
        return "this server plays by invitation: open the invite link its host gave you (it ends in ?token=...)"
    return "this invite link is not valid (wrong, or revoked): ask the server's host for a new one"


@dataclass
class ServeConfig:
    """Everything `mario-kit serve` takes; the defaults serve this machine only."""

    out: Path
    host: str = "127.0.0.1"
    port: int = 8000
    level: str = "1-1"  # as collect --human: W-S, a comma list (N moves on), or 'random'
    action_set: str = "simple"
    frame_skip: int = 4
    max_steps: int = 100_000
    fps: float = 60.0
    invites: Path | None = None
    max_players: int = 4  # at once, all tokens together
    keep_on_disconnect: bool = False  # a dropped connection's episode in progress: discarded, or kept as end='cut'
    max_message: int = 1024  # bytes per message from a page
    max_rate: float = 120.0  # messages per second from one page (a burst of twice that is allowed)
    allow_origins: tuple[str, ...] = ()  # other page origins allowed to connect, e.g. a reverse proxy's https://host

    def check(self) -> None:
        parse_levels(self.level)
        F.get_action_set(self.action_set)
        if not 1 <= self.frame_skip <= F.MAX_FRAME_SKIP:
            raise UserError(f"--frame-skip must be in 1..{F.MAX_FRAME_SKIP}")
        if self.max_players < 1 or not 1 <= self.port <= 65535:
            raise UserError("--max-players must be >= 1 and --port in 1..65535")


class _Rate:
    """A token bucket: `ok()` is False once the page sends faster than `rate` for long."""

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.t = rate, 2 * rate, time.monotonic()

    def ok(self) -> bool:
        now = time.monotonic()
        self.tokens = min(2 * self.rate, self.tokens + (now - self.t) * self.rate) - 1
        self.t = now
        return self.tokens >= 0


def parse_message(text: Any, max_bytes: int) -> dict[str, Any]:
    """A page's message, checked strictly; ValueError for anything else."""
    if not isinstance(text, str) or len(text) > max_bytes:
        raise ValueError("not a short text message")
    m = json.loads(text, parse_constant=_refuse)  # NaN, Infinity: refused
    if not isinstance(m, dict):
        raise ValueError("not an object")
    if m.get("t") == "keys" and set(m) <= {"t", "held", "c"}:
        held, c = m.get("held"), m.get("c")
        if (
            isinstance(held, list)
            and len(held) <= len(BUTTONS)
            and all(b in BUTTONS for b in held)
            and (c is None or (isinstance(c, (int, float)) and not isinstance(c, bool) and abs(c) < MAX_CLOCK))
        ):
            return m
    elif m.get("t") == "cmd" and set(m) == {"t", "cmd"} and m["cmd"] in COMMANDS:
        return m
    raise ValueError("unknown message")


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """A WebSocket's Origin: none (not a browser: a browser always sends one), the server's own page
    (the same host and port the request was sent to), or one the server was told to allow."""
    if origin is None:
        return True
    if origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


class Server:
    """The app's state: who plays, under which token."""

    def __init__(self, cfg: ServeConfig) -> None:
        cfg.check()
        self.cfg = cfg
        self.out = Path(cfg.out)
        check_output_dir(self.out, cfg.action_set, cfg.frame_skip)
        self.invites = Invites(cfg.invites)
        self.lock = threading.Lock()
        self.players: dict[int, str] = {}  # connection id -> token digest
        self.threads: list[threading.Thread] = []  # session threads (the tests wait for them)
        self.saved = self.steps = 0  # episodes and steps saved since the start
        self.names: set[str] = set()  # players seen since the start

    def say(self, line: str) -> None:
        """A line on the server's terminal (any thread)."""
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    def episode_saved(self, name: str, path: str, steps: int) -> None:
        with self.lock:
            self.saved += 1
            self.steps += steps
        self.say(f"{name}: saved {Path(path).name} ({steps:,} steps; {self.saved} this run)")

    def summary(self) -> str:
        return (
            f"stopped: {self.saved} episode{'' if self.saved == 1 else 's'} ({self.steps:,} steps) saved by "
            f"{len(self.names)} player{'' if len(self.names) == 1 else 's'} into {self.out}"
        )

    def admit(self, token: str | None) -> tuple[int, str, str] | int:
        """(connection id, digest, invite's player) or the close code that refuses the connection."""
        ok = self.invites.check(token)
        if ok is None:
            return UNAUTHORIZED
        d, player, most = ok
        with self.lock:
            if len(self.players) >= self.cfg.max_players or sum(v == d for v in self.players.values()) >= most:
                return TRY_LATER
            cid = secrets.randbits(63)
            self.players[cid] = d
        return cid, d, player

    def leave(self, cid: int) -> None:
        with self.lock:
            self.players.pop(cid, None)

    def session_config(self, player: str) -> CollectConfig:
        c = self.cfg
        return CollectConfig(
            out=self.out,
            policy="human",
            level=c.level,
            action_set=c.action_set,
            frame_skip=c.frame_skip,
            max_steps=c.max_steps,
            player=player,
        )


async def play(ws, server: Server) -> None:
    """One player's connection: admit, run the session thread, relay messages both ways."""
    cfg = server.cfg
    if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"), cfg.allow_origins):
        server.say(f"refused a page from {ws.headers.get('origin')!r} (another site; --allow-origin to allow one)")
        await ws.close(code=FORBIDDEN)  # before the handshake: that page learns nothing
        return
    token = ws.query_params.get("token")
    admitted = server.admit(token)
    await ws.accept()
    if isinstance(admitted, int):  # accepted to say why: a close before the handshake reaches a page as 1006
        why = refusal(admitted, token)
        server.say(f"refused a connection: {why}")
        await ws.send_json({"t": "refused", "why": why})
        await ws.close(code=admitted)
        return
    cid, digest, invited = admitted
    name = invited or clean_name(ws.query_params.get("name", ""))
    with server.lock:
        server.names.add(name)
        playing = len(server.players)
    server.say(f"{name or '(no name)'} joined ({playing} playing)")
    loop = asyncio.get_running_loop()
    outq: asyncio.Queue = asyncio.Queue()
    frames = [0]  # frames queued, not yet sent

    def send(kind: str, payload: Any) -> None:  # from the session thread
        if kind == "frame":
            frames[0] += 1
        loop.call_soon_threadsafe(outq.put_nowait, (kind, payload))

    player = BrowserPlayer(
        cfg.action_set, send, lambda: frames[0], cfg.fps, cfg.keep_on_disconnect, cfg.level == "random"
    )
    thread = threading.Thread(target=_session, args=(server, player, name, send), daemon=True, name=f"player-{name}")
    try:
        await ws.send_json(
            {
                "t": "hello",
                "player": name,
                "level": cfg.level,
                "action_set": cfg.action_set,
                "invite": cfg.invites is not None,
            }
        )
        thread.start()
        server.threads = [t for t in server.threads if t.is_alive()] + [thread]
        tasks = [
            asyncio.create_task(_receive(ws, player, cfg)),
            asyncio.create_task(_send(ws, outq, frames, server, digest)),
        ]
        done, rest = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in rest:
            t.cancel()
    finally:  # first what must happen even if this task is cancelled: the session thread sees the flag and ends
        player.disconnect()
        server.leave(cid)
        if thread.is_alive():
            await asyncio.to_thread(thread.join)
        server.say(f"{name or '(no name)'} left ({player.saved} episode{'' if player.saved == 1 else 's'} saved)")
        try:
            await ws.close(code=player.violation or 1000)
        except Exception:  # noqa: BLE001  (already closed by the other side)
            pass


def _session(server: Server, player: BrowserPlayer, name: str, send) -> None:
    """The emulator thread: episodes until the player quits or the connection drops."""
    try:
        record_session(
            server.session_config(name),
            player,
            secrets.randbits(31),
            lambda kind, value: server.episode_saved(name, *value) if kind == "episode" else None,
        )
    except Exception as e:  # noqa: BLE001  (a full disk or a bug ends this player, not the server)
        send("event", {"t": "error", "msg": str(e).splitlines()[0][:200]})
    finally:
        send("end", None)


async def _receive(ws, player: BrowserPlayer, cfg: ServeConfig) -> None:
    rate = _Rate(cfg.max_rate)
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        if isinstance(text, str) and len(text) > cfg.max_message:
            player.violation = TOO_BIG
            return
        try:
            if not rate.ok() or "bytes" in msg and msg["bytes"] is not None:
                raise ValueError("too fast, or binary")
            m = parse_message(text, cfg.max_message)
        except ValueError:
            player.violation = POLICY_VIOLATION
            return
        if m["t"] == "keys":
            player.keys(m["held"], m.get("c"))
        else:
            player.queue_command(m["cmd"])


async def _send(ws, outq: asyncio.Queue, frames: list[int], server: Server, digest: str) -> None:
    last_check = time.monotonic()
    while True:
        kind, payload = await outq.get()
        if kind == "frame":
            frames[0] -= 1
            await ws.send_bytes(payload)
        elif kind == "event":
            await ws.send_json(payload)
        else:  # the session ended (quit, or an error already said)
            await ws.send_json({"t": "bye"})
            return
        if time.monotonic() - last_check > 2.0:  # a revoked token stops playing within seconds
            last_check = time.monotonic()
            if not server.invites.allowed(digest):
                return


def make_app(cfg: ServeConfig):
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn", "websockets")):
        raise UserError("mario-kit serve needs Starlette, uvicorn and websockets: pip install 'mario-kit[serve]'")
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route, WebSocketRoute

    server = Server(cfg)
    headers = {
        "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }

    def static(name: str, media: str):
        async def endpoint(request):
            return FileResponse(STATIC / name, media_type=media, headers=headers)

        return endpoint

    async def ws_endpoint(ws):
        await play(ws, server)

    async def config(request):
        return JSONResponse({"invites": cfg.invites is not None, "level": cfg.level}, headers=headers)

    app = Starlette(
        routes=[
            Route("/", static("index.html", "text/html")),
            Route("/app.js", static("app.js", "text/javascript")),
            Route("/app.css", static("app.css", "text/css")),
            Route("/config.json", config),
            WebSocketRoute("/ws", ws_endpoint),
        ]
    )
    app.state.server = server
    return app


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is written or announced: a port in use is one line."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host}: {e.strerror}") from None
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
    except OSError as e:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {e.strerror} (another server there? choose another --port)"
        ) from None
    return sock


def serve(cfg: ServeConfig) -> None:
    """Run the server until Ctrl-C (uvicorn); the summary is printed when it stops."""
    import uvicorn

    cfg.check()
    sock = bind(cfg.host, cfg.port)
    try:
        app = make_app(cfg)
        print(
            f"mario-kit serve: http://{cfg.host}:{cfg.port}/ -> {Path(cfg.out).resolve()}"
            + ("" if cfg.invites else " (no invites: anyone who reaches this address can play)"),
            flush=True,
        )
        try:  # uvicorn shuts down on Ctrl-C, then raises it again: stopping a server that way is its normal end
            uvicorn.Server(uvicorn.Config(app, ws_max_size=cfg.max_message, log_level="warning")).run(sockets=[sock])
        except KeyboardInterrupt:
            pass
    finally:
        sock.close()
    print(app.state.server.summary(), flush=True)
