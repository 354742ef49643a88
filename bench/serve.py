"""`mario-kit serve` measured (issue 23). Prints JSON.

    .venv/bin/python bench/serve.py [--parts frame,players,browser] [--players 1,2,4,8,12,16]

frame    server time per frame of one player (emulate + encode) and its share of the 16.7 ms budget;
         bytes per frame and per second (XOR with the previous frame, deflate level 1), over 600
         frames of play (right held, jumping), against sending raw RGB.
players  `mario-kit serve` in a subprocess and N players on loopback (threads of a bounded client:
         websockets, no decoding, keys sent like a person's); frames/s each player receives over 6 s
         (median, worst), the server's CPU; the count at which pacing breaks (worst < 57 frames/s).
browser  headless Chromium (Debian's chromium + chromedriver, Selenium) plays the page: keypress to
         frame latency as the page measures it (median, p95 over the key changes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MK = [sys.executable, "-m", "mario_kit"]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def part_frame() -> dict:
    from mario_kit.datasets import format as F
    from mario_kit.emulator import MarioEnv
    from mario_kit.serve.player import encode_frame

    env = MarioEnv("1-1")
    env.reset()
    right, jump = F.buttons_to_byte(("right",)), F.buttons_to_byte(("right", "A"))
    base, emu, enc, sizes = None, [], [], []
    for i in range(600):
        t = time.perf_counter()
        env.step_frame(jump if (i // 30) % 2 else right)
        frame = env.screen
        t1 = time.perf_counter()
        msg = encode_frame(frame, base, {"f": i})
        t2 = time.perf_counter()
        base = frame.copy()
        emu.append(t1 - t)
        enc.append(t2 - t1)
        sizes.append(len(msg))
    env.close()
    total = 1e3 * (np.mean(emu) + np.mean(enc))
    return {
        "frames": 600,
        "emulate_ms": round(1e3 * np.mean(emu), 3),
        "encode_ms": round(1e3 * np.mean(enc), 3),
        "total_ms": round(total, 3),
        "share_of_16_7_ms": round(total / (1000 / 60), 3),
        "bytes_per_frame": round(float(np.mean(sizes))),
        "bytes_per_s_at_60": round(60 * float(np.mean(sizes))),
        "raw_rgb_bytes_per_s": 240 * 256 * 3 * 60,
        "compression": round(240 * 256 * 3 / float(np.mean(sizes)), 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(out: Path, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        MK + ["serve", "--out", str(out), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit(proc.communicate()[1])


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _player(port: int, seconds: float, result: list, k: int) -> None:
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/ws?name=load{k}", max_size=None) as ws:
        ws.recv()
        ws.send(json.dumps({"t": "cmd", "cmd": "start"}))
        stamps, t0, held = [], time.perf_counter(), False
        while time.perf_counter() - t0 < seconds:
            m = ws.recv()
            if isinstance(m, bytes):
                stamps.append(time.perf_counter())
                if len(stamps) % 20 == 0:  # a key change every third of a second
                    held = not held
                    ws.send(json.dumps({"t": "keys", "held": ["right", "A"] if held else ["right"]}))
        ws.send(json.dumps({"t": "cmd", "cmd": "quit"}))
    s = [t for t in stamps if t - stamps[0] > 1.0]  # after a second of warm-up
    result[k] = (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 else 0.0


def part_players(counts: list[int]) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in counts:
            port = free_port()
            proc = start_server(Path(d) / f"p{n}", port, "--max-players", str(n))
            try:
                fps: list = [0.0] * n
                c0, t0 = cpu_s(proc.pid), time.perf_counter()
                threads = [threading.Thread(target=_player, args=(port, 6.0, fps, k)) for k in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                cpu = (cpu_s(proc.pid) - c0) / (time.perf_counter() - t0)
            finally:
                proc.terminate()
                proc.wait()
            rows.append(
                {
                    "players": n,
                    "median_fps": round(statistics.median(fps), 1),
                    "worst_fps": round(min(fps), 1),
                    "server_cpu_cores": round(cpu, 2),
                }
            )
            if min(fps) < 57:
                break
    held = [r["players"] for r in rows if r["worst_fps"] >= 57]
    return {"rows": rows, "players_at_60_fps": max(held) if held else 0, "cores": os.cpu_count()}


def part_browser() -> dict:
    from test_browser import chromium  # the tests' Chromium launch (flags for this closed network)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        proc = start_server(Path(d) / "b", port)
        driver = chromium(f"http://127.0.0.1:{port}/?name=bench")
        try:
            time.sleep(1.5)
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            time.sleep(0.5)
            for _ in range(40):  # key changes a person might make: right, then right+jump
                ActionChains(driver).key_down(Keys.ARROW_RIGHT).perform()
                time.sleep(0.15)
                ActionChains(driver).key_down("x").perform()
                time.sleep(0.15)
                ActionChains(driver).key_up("x").key_up(Keys.ARROW_RIGHT).perform()
                time.sleep(0.1)
            lat = driver.execute_script("return window.marioKitLatencies || []")
            last = driver.execute_script("return window.marioKitLast")
        finally:
            driver.quit()
            proc.terminate()
            proc.wait()
    lat = sorted(lat)
    return {
        "key_changes": len(lat),
        "latency_median_ms": round(lat[len(lat) // 2], 1),
        "latency_p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 1),
        "page_fps": last and last["fps"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="frame,players,browser")
    ap.add_argument("--players", default="1,2,4,8,12,16")
    args = ap.parse_args()
    res = {"cpus": os.cpu_count()}
    for part in args.parts.split(","):
        t = time.perf_counter()
        res[part] = {
            "frame": part_frame,
            "players": lambda: part_players([int(x) for x in args.players.split(",")]),
            "browser": part_browser,
        }[part]()
        res[part]["part_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
