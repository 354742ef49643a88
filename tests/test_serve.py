"""mario-kit serve without a browser: the protocol through Starlette's test client (the real app,
real emulators, real files), hostile messages, invites, disconnects, and a SIGKILLed server
restarted into the same folder through the `mario-kit serve` command."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from mario_kit.datasets.dataset import Dataset  # noqa: E402
from mario_kit.datasets.episode import Episode  # noqa: E402
from mario_kit.emulator import replay  # noqa: E402
from mario_kit.serve.app import ServeConfig, make_app  # noqa: E402
from mario_kit.serve.player import decode_frame  # noqa: E402


def client(out: Path, **kw) -> TestClient:
    return TestClient(make_app(ServeConfig(out=out, **kw)))


def send(ws, **msg) -> None:
    ws.send_text(json.dumps(msg))


def frames_until(ws, frames: int, base=None):
    """Receive until `frames` frames arrived; returns (last header, base, events)."""
    events, n, head = [], 0, None
    while n < frames:
        m = ws.receive()
        if m.get("bytes"):
            head, base = decode_frame(m["bytes"], base)
            n += 1
        elif m.get("text"):
            events.append(json.loads(m["text"]))
    return head, base, events


def close_code(ws) -> int:
    """Read on until the server closes the connection; its close code."""
    while True:
        m = ws.receive()
        if m["type"] == "websocket.close":
            return m["code"]


def until_bye(ws) -> list[dict]:
    events = []
    while True:
        m = ws.receive()
        if m.get("text"):
            events.append(json.loads(m["text"]))
            if events[-1]["t"] == "bye":
                return events


def test_page_and_script_are_served_with_a_strict_policy(tmp_path):
    c = client(tmp_path / "d")
    page, js, css = c.get("/"), c.get("/app.js"), c.get("/app.css")
    assert (
        css.status_code == 200 and "image-rendering: pixelated" in css.text and "<style" not in page.text
    )  # CSP: no inline
    assert page.status_code == 200 and '<canvas id="screen"' in page.text and 'src="/app.js"' in page.text
    assert js.status_code == 200 and "DecompressionStream" in js.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere


def test_a_browser_session_records_what_was_pressed_and_replays_bit_exact(tmp_path):
    out = tmp_path / "d"
    with client(out).websocket_connect("/ws?name=../../al/ice") as ws:
        hello = ws.receive_json()
        assert hello["player"] == "alice" and hello["level"] == "1-1"
        head, base, _ = frames_until(ws, 5)
        assert not head["rec"] and head["banner"] == "press Enter to start"
        send(ws, t="cmd", cmd="start")
        send(ws, t="keys", held=["right"], c=1.0)
        head, base, _ = frames_until(ws, 60, base)
        assert head["rec"] and head["act"] == "right" and head["c"] == 1.0
        send(ws, t="keys", held=["right", "A"], c=2.0)
        head, base, _ = frames_until(ws, 12, base)
        assert head["act"] == "right+A"
        send(ws, t="cmd", cmd="quit")
        events = until_bye(ws)
    saved = [e for e in events if e["t"] == "saved"]
    assert len(saved) == 1 and saved[0]["end"] == "cut"
    ds = Dataset(out)
    assert len(ds.paths) == 1 and not list(out.glob("*.partial"))
    with Episode(ds.paths[0]) as ep:
        assert ep.attrs["source"] == "human" and ep.attrs["player"] == "alice"
        assert ep.attrs["policy"]["client"] == "browser"
        names = [ep.action_set.meaning(a) for a in ep.actions]
        assert set(names) <= {"right", "right+A"} and names[0] == "right" and "right+A" in names
        assert saved[0]["steps"] == ep.length
        for t, (frame, _) in enumerate(replay("1-1", ep.joypad, ep.step_frames)):
            assert np.array_equal(frame, ep.frames[t]), t


@pytest.mark.parametrize(
    "bad",
    [
        "x" * 5000,  # over the size limit: 1009, as the WebSocket layer closes larger ones
        "{not json",
        json.dumps({"t": "keys", "held": ["right"], "evil": 1}),  # an unknown key
        json.dumps({"t": "keys", "held": ["jetpack"]}),
        json.dumps({"t": "cmd", "cmd": "rm -rf /"}),
        json.dumps(["t", "keys"]),
        b"\x00\x01binary",
    ],
)
def test_a_hostile_message_closes_that_connection_only(tmp_path, bad):
    out = tmp_path / "d"
    c = client(out)
    with c.websocket_connect("/ws?name=mallory") as ws:
        ws.receive_json()
        send(ws, t="cmd", cmd="start")
        frames_until(ws, 3)
        ws.send_bytes(bad) if isinstance(bad, bytes) else ws.send_text(bad)
        assert close_code(ws) == (1009 if len(bad) > 1024 else 1008)
    with c.websocket_connect("/ws?name=bob") as ws:  # the server goes on
        assert ws.receive_json()["player"] == "bob"
        send(ws, t="cmd", cmd="quit")
        until_bye(ws)
    assert not list(out.glob("*.h5")) and not list(out.glob("*.partial"))  # nothing recorded: no step was played


def test_a_flood_is_cut_off(tmp_path):
    with client(tmp_path / "d", max_rate=50).websocket_connect("/ws?name=x") as ws:
        ws.receive_json()
        for k in range(400):
            send(ws, t="keys", held=["right"] if k % 2 else [], c=float(k))
        assert close_code(ws) == 1008


def test_invites_tokens_revocation_and_limits(tmp_path):
    inv = tmp_path / "invites.json"
    r = run_cli("invite", "add", "--invites", inv, "--player", "Ann/../x")
    assert r.returncode == 0, r.stderr
    token = r.stdout.split("token for Ann/../x: ")[1].split()[0]
    assert token not in inv.read_text()  # stored hashed
    c = client(tmp_path / "d", invites=inv, max_players=1)
    assert c.get("/config.json").json()["invites"] is True  # the page asks for no name and says a link is needed
    for q, says in (("", "open the invite link"), ("?token=wrong", "not valid")):
        with c.websocket_connect(f"/ws{q}") as ws:
            m = ws.receive_json()
            assert m["t"] == "refused" and says in m["why"], m
            assert close_code(ws) == 4401
    with c.websocket_connect(f"/ws?token={token}&name=someone-else") as ws:
        assert ws.receive_json()["player"] == "Ann..x"  # the invite's name, cleaned; the name asked for is ignored
        with c.websocket_connect(
            f"/ws?token={token}"
        ) as ws2:  # the token's one connection is taken (and the server's one player)
            assert "try again later" in ws2.receive_json()["why"] and close_code(ws2) == 1013
        send(ws, t="cmd", cmd="quit")
        until_bye(ws)
    assert run_cli("invite", "revoke", "--invites", inv, "--player", "Ann..x").returncode == 0
    with c.websocket_connect(f"/ws?token={token}") as ws:
        assert ws.receive_json()["t"] == "refused" and close_code(ws) == 4401


@pytest.mark.parametrize("keep", [False, True])
def test_a_dropped_connection_discards_or_keeps_the_episode_in_progress(tmp_path, keep):
    out = tmp_path / "d"
    c = client(out, keep_on_disconnect=keep)
    with c.websocket_connect("/ws?name=x") as ws:
        ws.receive_json()
        send(ws, t="cmd", cmd="start")
        send(ws, t="keys", held=["right"])
        frames_until(ws, 30)
    for t in c.app.state.server.threads:  # the session thread ends by itself
        t.join(timeout=10)
        assert not t.is_alive()
    assert not c.app.state.server.players and not list(out.glob("*.partial"))
    files = list(out.glob("*.h5"))
    if keep:
        assert len(files) == 1
        with Episode(files[0]) as ep:
            assert ep.attrs["end"] == "cut" and ep.length > 0
    else:
        assert files == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def test_killed_server_keeps_finished_episodes_and_restarts_into_the_folder(tmp_path):
    from websockets.sync.client import connect

    out, port = tmp_path / "d", free_port()
    cmd = [sys.executable, "-m", "mario_kit", "serve", "--out", str(out), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        with connect(f"ws://127.0.0.1:{port}/ws?name=k") as ws:
            json.loads(ws.recv())
            ws.send(json.dumps({"t": "cmd", "cmd": "start"}))
            ws.send(json.dumps({"t": "keys", "held": ["right"]}))
            ws.send(json.dumps({"t": "cmd", "cmd": "next"}))  # ends the first episode (kept as 'cut')
            saved = None
            while saved is None:
                m = ws.recv()
                if isinstance(m, str) and json.loads(m)["t"] == "saved":
                    saved = json.loads(m)
            for _ in range(60):  # well into the second episode
                ws.recv()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        proc.kill()
    assert [p.name for p in out.glob("*.h5")] == [saved["file"]]
    assert len(list(out.glob("*.partial"))) == 1  # the episode in progress, left as every killed writer leaves it
    r = run_cli("dataset", "validate", out)
    assert r.returncode == 0 and "incomplete" in r.stdout.lower() + r.stderr.lower()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        with connect(f"ws://127.0.0.1:{port}/ws?name=k") as ws:
            assert json.loads(ws.recv())["t"] == "hello"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert len(Dataset(out).paths) == 1


def test_the_terminal_says_who_plays_and_a_busy_port_is_one_line(tmp_path):
    """The server's terminal: a line when a player joins, saves and leaves, a summary on Ctrl-C; a
    port in use: one line, exit 2, before anything is announced or the folder is created."""
    from websockets.sync.client import connect

    out, port = tmp_path / "d", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mario_kit", "serve", "--out", str(out), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, proc)
        busy = run_cli("serve", "--out", tmp_path / "other", "--port", port)
        assert busy.returncode == 2 and "cannot listen" in busy.stderr and "--port" in busy.stderr, busy.stderr
        assert busy.stdout == "" and len(busy.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()
        with connect(f"ws://127.0.0.1:{port}/ws?name=kim") as ws:
            json.loads(ws.recv())
            ws.send(json.dumps({"t": "cmd", "cmd": "start"}))
            ws.send(json.dumps({"t": "keys", "held": ["right"]}))
            for _ in range(30):
                ws.recv()
            ws.send(json.dumps({"t": "cmd", "cmd": "quit"}))
            while not (isinstance(m := ws.recv(), str) and json.loads(m)["t"] == "bye"):
                pass
    finally:
        time.sleep(0.5)  # the 'left' line is written as the connection closes
        proc.send_signal(signal.SIGINT)
        printed, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "kim joined (1 playing)" in printed and "kim: saved " in printed and "kim left (1 episode saved)" in printed
    assert "stopped: 1 episode (" in printed and "saved by 1 player into" in printed, printed


def test_revoking_a_token_stops_its_open_connection(tmp_path):
    from mario_kit.serve.invites import add, revoke

    inv = tmp_path / "invites.json"
    token = add(inv, "eve")
    with client(tmp_path / "d", invites=inv).websocket_connect(f"/ws?token={token}") as ws:
        assert ws.receive_json()["player"] == "eve"
        send(ws, t="cmd", cmd="start")
        frames_until(ws, 10)
        revoke(inv, "eve")
        frames = 0  # the server checks the invites every 2 s of its own clock, at 60 frames/s at most:
        while (m := ws.receive())["type"] != "websocket.close":  # a count of frames, not the machine's speed
            frames += bool(m.get("bytes"))
        assert m["code"] in (1000, 1008) and frames <= 5 * 60, frames
