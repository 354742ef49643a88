"""mario-kit serve in a real browser: headless Chromium (Debian's chromium and chromedriver,
driven by Selenium) opens the page, holds Right, presses Enter, jumps, quits; the folder then holds
one episode whose actions are what was pressed. `make test` installs Chromium where apt can; the
test is skipped, saying why, only where no browser could be installed."""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "no Chromium: install Debian's chromium and chromium-driver (make test does where apt works)",
        allow_module_level=True,
    )
selenium = pytest.importorskip("selenium")

from mario_kit.datasets.dataset import Dataset  # noqa: E402
from mario_kit.datasets.episode import Episode  # noqa: E402


def chromium(url: str):
    """Headless Chromium at `url`, with the flags this closed network needs (no background calls)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="mario-kit-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.profile_dir = profile  # type: ignore[attr-defined]  # ours: removed after quit
    driver.get(url)
    return driver


def serve(out: Path, *args: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mario_kit", "serve", "--out", str(out), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
    raise AssertionError("server did not start")


def wait_for(driver, script: str, timeout: float = 30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = driver.execute_script(script)
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def test_chromium_plays_the_page_and_the_episode_holds_what_was_pressed(tmp_path):
    """A new player: types a name, one Enter connects and starts recording; the picture is the game's
    alone (the recording's state is beside it); after Esc the page says what was saved."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out = tmp_path / "d"
    proc, port = serve(out)
    driver = chromium(f"http://127.0.0.1:{port}/")
    try:
        wait_for(driver, "return document.getElementById('status').textContent.includes('type your player name')")
        driver.find_element(By.ID, "name").send_keys("chromium", Keys.ENTER)  # one Enter
        wait_for(driver, "return window.marioKitLast && window.marioKitLast.rec")  # recording, no second Enter
        ActionChains(driver).key_down(Keys.ARROW_RIGHT).perform()
        s0 = wait_for(driver, "return window.marioKitLast.act === 'right' && window.marioKitLast.step + 1")
        wait_for(driver, f"return window.marioKitLast.step > {s0 + 22}")  # a run-up of 20 whole steps at least
        sky = driver.execute_script(
            "return Array.from(document.getElementById('screen').getContext('2d')"
            ".getImageData(200, 3, 1, 1).data.slice(0, 3))"
        )
        assert sky == [104, 136, 252]  # the game's own sky at the top: nothing drawn over the HUD's strip
        assert "REC" in driver.find_element(By.ID, "hud").text
        ActionChains(driver).key_down("x").perform()
        wait_for(driver, "return window.marioKitLast.act === 'right+A'")
        time.sleep(0.3)
        ActionChains(driver).key_up("x").perform()
        wait_for(driver, "return window.marioKitLast.act === 'right'")
        time.sleep(0.2)
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        events = wait_for(
            driver, "return (window.marioKitEvents || []).some(e => e.t === 'bye') && window.marioKitEvents"
        )
        status = wait_for(
            driver, "const s = document.getElementById('status').textContent; return s.includes('session ended') && s"
        )
        time.sleep(0.5)  # the server closes the connection: the page keeps saying what was saved
        status = driver.find_element(By.ID, "status").text
        latencies = driver.execute_script("return window.marioKitLatencies")
    finally:
        driver.quit()
        shutil.rmtree(driver.profile_dir, ignore_errors=True)
        proc.terminate()
        proc.wait(timeout=30)
    saved = [e for e in events if e["t"] == "saved"]
    assert len(saved) == 1 and saved[0]["end"] == "cut", events
    assert "1 episode saved" in status and saved[0]["file"] in status, status
    paths = Dataset(out).paths
    assert len(paths) == 1
    with Episode(paths[0]) as ep:
        names = [ep.action_set.meaning(a) for a in ep.actions]
        assert ep.attrs["player"] == "chromium" and ep.attrs["policy"]["client"] == "browser"
    played = [n for n in names if n != "NOOP"]  # before Right went down: nothing held
    assert played[0] == "right" and "right+A" in played and set(played) <= {"right", "right+A"}, names
    assert played.index("right+A") >= 20  # the jump came after the run-up, as pressed
    assert latencies and min(latencies) > 0 and json.dumps(latencies)


def test_an_invite_only_server_tells_a_page_without_its_link(tmp_path):
    from selenium.webdriver.common.by import By

    from mario_kit.serve.invites import add

    token = add(tmp_path / "invites.json", "ivy")
    proc, port = serve(tmp_path / "d", "--invites", str(tmp_path / "invites.json"))
    try:
        for query, says in (
            ("", "plays by invitation"),
            ("?token=wrong", "not valid"),
            (f"?token={token}", "playing as ivy"),
        ):
            driver = chromium(f"http://127.0.0.1:{port}/{query}")
            try:
                wait_for(driver, f"return document.getElementById('status').textContent.includes({says!r})")
                assert driver.find_element(By.ID, "name").get_attribute("disabled")  # the invite names the player
            finally:
                driver.quit()
                shutil.rmtree(driver.profile_dir, ignore_errors=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
