"""Spoken memories through the live page's real microphone path, in headless Chromium.

Chromium's fake capture device plays an espeak-ng sentence ("The keys are in the kitchen
drawer.") as the microphone (``--use-file-for-fake-audio-capture``); the page's talk button
runs getUserMedia -> AudioWorklet -> /ws/audio -> the web node -> /audio -> perception
(Silero + faster-whisper tiny.en, the real weights) -> /transcripts -> memory. The question
is typed into the page and its answer must name the kitchen drawer, from that memory.
Nothing here publishes a transcript: if any link of the speech path breaks, no answer names
the drawer and the test fails.

Needs /usr/bin/chromium + /usr/bin/chromedriver (``make setup`` installs them: Debian's
chromium and chromium-driver) and espeak-ng.
"""

from __future__ import annotations

import shutil
import time

import pytest

from engram.runtime.apps.live import LiveConfig, LiveDemo
from tests.runtime._browser import INSTALL, headless_chromium, need_browser, wait_for
from tests.runtime._media import write_speech, write_video


def _need_tools() -> None:
    need_browser()
    if shutil.which("espeak-ng") is None:
        pytest.fail(f"espeak-ng is missing: {INSTALL}")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory):
    _need_tools()
    d = tmp_path_factory.mktemp("web-mic")
    video = write_video(d / "room.avi", frames=20, fps=10.0, size=(160, 120))
    # Chromium loops the file: the sentence, then 2.5 s of quiet room noise
    speech = write_speech(d / "said.wav", ("The keys are in the kitchen drawer.",), gap_s=2.5)
    config = LiveConfig(
        camera=str(video),
        mic="browser",
        port=0,
        random_weights=True,
        clip_model="engram-vit-tiny",
        device="cpu",
        loop=True,
    )
    demo = LiveDemo(config)
    demo.start()
    try:
        yield demo, speech, d
    finally:
        demo.stop()


@pytest.fixture(scope="module")
def browser(spoken):
    _, speech, d = spoken
    with headless_chromium(
        d / "chromium-profile",
        "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech}",
        "--autoplay-policy=no-user-gesture-required",
    ) as driver:
        yield driver


def test_spoken_sentence_through_the_page_microphone_is_remembered(spoken, browser):
    from selenium.webdriver.common.by import By

    demo, _, _ = spoken
    browser.get(demo.url)
    button = wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "mic-button").is_displayed()
            and d.find_element(By.ID, "mic-button")
        ),
        30,
        "the talk button (engram live --mic browser)",
    )
    button.click()
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "mic-button").get_attribute("data-state") != "starting",
        15,
        "the microphone starting",
    )
    state = button.get_attribute("data-state")
    assert state == "on", f"microphone state {state}: {button.get_attribute('title')}"

    # the spoken sentence arrives as the page's running transcript
    def heard(d) -> str:
        texts = [e.text.lower() for e in d.find_elements(By.CSS_SELECTOR, "#transcript .text")]
        return next((t for t in texts if "kitchen" in t and "drawer" in t), "")

    said = wait_for(browser, heard, 90, "a transcript of the spoken sentence")
    assert "key" in said, said  # tiny.en may hear "the key is on the kitchen drawer"
    assert demo.hub.counters["browser_audio_chunks"] >= 20  # 100 ms blocks from the page

    # asked in the page (typed), the answer comes from that spoken memory
    box = browser.find_element(By.ID, "question")
    answer = ""
    # the page loops the sentence: a miss (a partial shown, its final heard differently)
    # gets further utterances within this time
    deadline = time.monotonic() + 60
    while "kitchen drawer" not in answer.lower() and time.monotonic() < deadline:
        browser.execute_script("document.getElementById('answer-text').hidden = true;")
        box.clear()
        box.send_keys("where are my keys?")
        browser.find_element(By.ID, "ask-button").click()
        wait_for(
            browser,
            lambda d: (
                d.find_element(By.ID, "answer-text").is_displayed()
                and d.find_element(By.ID, "ask-button").is_enabled()
            ),
            30,
            "an answer",
        )
        answer = browser.find_element(By.ID, "answer-text").text
        if "kitchen drawer" not in answer.lower():
            time.sleep(0.5)  # the transcript may still be on its way into the memory
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#transcript .text")]
    assert "kitchen drawer" in answer.lower(), f"{answer!r}; transcripts shown: {shown}"
    assert browser.find_element(By.ID, "answer-text").get_attribute("class") == "answered"
    hits = browser.find_elements(By.CSS_SELECTOR, "#answers .hit")
    assert any("kitchen drawer" in h.text.lower() for h in hits), [h.text for h in hits]

    # the talk button stops the stream; perception closes what was being said
    button.click()
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "mic-button").get_attribute("data-state") == "off",
        10,
        "the microphone stopping",
    )


# ---- the /ws/audio protocol, without a browser ------------------------------------------


@pytest.fixture
def mic_hub():
    from engram.runtime.apps.web import LiveHub, LiveHubConfig
    from engram.runtime.bus import InProcBus

    bus = InProcBus("web-mic")
    hub = LiveHub(
        LiveHubConfig(heartbeat_hz=0.0, map_refresh_s=0.0, browser_mic_topic="/audio"),
        bus=bus,
        name="web",
    )
    sub = bus.subscribe("/audio", "queue(64)")
    hub.start()
    yield hub, sub
    hub.stop()
    bus.close()


def _audio_socket(hub, messages):
    """Send ``messages`` on /ws/audio; the close code the server answered with (None: open)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from engram.runtime.apps.web import WebServer, make_app

    server = WebServer(make_app(hub), host="127.0.0.1", port=0)
    server.start()
    try:
        with connect(f"ws://127.0.0.1:{server.port}/ws/audio", open_timeout=10) as ws:
            try:
                for m in messages:
                    ws.send(m)
                ws.recv(timeout=2)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd is not None else None
            except TimeoutError:
                return None
    finally:
        server.stop()
    return None


def test_audio_socket_publishes_pcm_as_audio_chunks_then_ends_the_stream(mic_hub):
    import json

    import numpy as np

    hub, sub = mic_hub
    tone = (0.25 * np.sin(np.arange(3200) / 16000 * 2 * np.pi * 300) * 32767).astype("<i2")
    code = _audio_socket(
        hub,
        [
            json.dumps({"type": "start", "sample_rate_hz": 16000}),
            tone[:1600].tobytes(),
            tone[1600:].tobytes(),
            json.dumps({"type": "stop"}),
        ],
    )
    assert code in (None, 1000)
    got = [sub.get(timeout_s=5) for _ in range(3)]
    assert None not in got and sub.get(timeout_s=0.2) is None
    assert [len(c.pcm) for c in got] == [1600, 1600, 1]
    assert [c.end_of_stream for c in got] == [False, False, True]
    assert all(c.source == "browser" and c.sample_rate_hz == 16000 for c in got)
    assert got[1].stamp_ns - got[0].stamp_ns == 100_000_000  # stamped by samples received
    assert np.allclose(got[0].pcm[:, 0], tone[:1600] / 32768.0, atol=1e-6)


@pytest.mark.parametrize(
    "messages",
    [
        [b"\x00\x01" * 10],  # audio before the start message
        ['{"type": "start", "sample_rate_hz": 3}'],  # an impossible rate
        ['{"type": "start", "sample_rate_hz": 16000}', b"\x00\x01\x02"],  # odd byte count
        ["hello"],
    ],
)
def test_audio_socket_protocol_violations_close_it(mic_hub, messages):
    hub, sub = mic_hub
    assert _audio_socket(hub, messages) == 1008
    while (chunk := sub.get(timeout_s=0.2)) is not None:
        assert len(chunk.pcm) == 1 and chunk.end_of_stream  # nothing but an end marker


def test_audio_socket_is_closed_when_the_page_is_not_the_microphone():
    from engram.runtime.apps.web import LiveHub, LiveHubConfig
    from engram.runtime.bus import InProcBus

    bus = InProcBus("web-no-mic")
    hub = LiveHub(LiveHubConfig(heartbeat_hz=0.0, map_refresh_s=0.0), bus=bus, name="web")
    hub.start()
    try:
        assert _audio_socket(hub, ['{"type": "start", "sample_rate_hz": 16000}']) == 1008
    finally:
        hub.stop()
        bus.close()
