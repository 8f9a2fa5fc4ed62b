"""End to end in headless Chromium: ``engram live``'s graph with a video file as the camera
and a WAV file as the microphone (tiny random models), the page in a real browser.

Whisper with random weights writes meaningless text: the test checks that transcript
entries appear, not their words. A screenshot of the page is saved in tmp_path.
"""

from __future__ import annotations

import time

import pytest

from engram.runtime.apps.live import LiveConfig, LiveDemo
from tests.runtime._browser import headless_chromium, wait_for
from tests.runtime._media import write_speech, write_video
from tests.runtime.bridges.test_rerun import rrd_entities


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("live")
    video = write_video(d / "room.avi", frames=30, fps=10.0, size=(160, 120))
    speech = write_speech(
        d / "speech.wav", ("Where did I leave my keys", "The red mug is on the kitchen table")
    )
    config = LiveConfig(
        camera=str(video),
        mic=str(speech),
        port=0,
        random_weights=True,
        clip_model="engram-vit-tiny",
        device="cpu",
        loop=True,
        rerun=str(d / "live.rrd"),
    )
    demo = LiveDemo(config)
    demo.start()
    try:
        yield demo, d
    finally:
        demo.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile"), window="1500,1250") as d:
        yield d


def test_live_page_end_to_end(live, browser, tmp_path):
    from selenium.webdriver.common.by import By

    demo, _ = live
    browser.get(demo.url)
    assert browser.title == "Engram live"
    css = browser.find_element

    # frames arrive over the WebSocket and are drawn on the canvas
    wait_for(
        browser, lambda d: int(css(By.ID, "video").get_attribute("data-seq")) >= 3, 30, "frames"
    )
    assert css(By.ID, "conn").text == "live"
    # random weights are said on the page, not only in a stderr warning
    badge = css(By.ID, "model-warning")
    assert badge.is_displayed() and "random weights" in badge.text
    assert not css(By.ID, "no-video").is_displayed()
    size = browser.execute_script(
        "const c = document.getElementById('video');"
        "return [+c.dataset.frameWidth, +c.dataset.frameHeight, c.width, c.height];"
    )
    assert size[:2] == [160, 120] and size[2] >= 160
    # the canvas really holds the video (not a blank): the red square is drawn, about
    # 40 x 40 of 160 x 120 pixels (minus what the boxes cover)
    red_fraction = browser.execute_script(
        "const c = document.getElementById('video');"
        "const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 0; i < px.length; i += 4) if (px[i] > 170 && px[i+1] < 80 && px[i+2] < 80) n++;"
        "return n / (c.width * c.height);"
    )
    assert red_fraction > 0.03

    # the running transcript updates (whisper with random weights: any text)
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript .entry")) >= 1,
        60,
        "a transcript entry",
    )
    entry = browser.find_elements(By.CSS_SELECTOR, "#transcript .entry")[0]
    assert entry.find_element(By.CSS_SELECTOR, ".text").text.strip()
    assert ":" in entry.find_element(By.CSS_SELECTOR, ".t").text  # a clock time

    # memories: keyframes with thumbnails on the timeline
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline .event.keyframe img")) >= 1,
        30,
        "a keyframe on the timeline",
    )

    # spoken memories: a final transcript (as the speech node publishes it) becomes a
    # fact with who / when / where; asked later in the page, it is the answer, shown
    # first, with its evidence below (a thumbnail and a time)
    from engram.runtime.messages import Transcript

    keyframes = demo.hub.timeline()
    stamp = max(e["stamp_ns"] for e in keyframes) if keyframes else time.time_ns()
    demo.bus.publish(
        "/transcripts",
        Transcript(
            stamp_ns=stamp,
            text="the keys are in the kitchen drawer",
            start_ns=stamp,
            end_ns=stamp + 2_000_000_000,
            confidence=0.9,
            speaker="ann",
        ),
    )
    box = css(By.ID, "question")

    def ask(question: str, what: str) -> str:
        browser.execute_script("document.getElementById('answer-text').hidden = true;")
        box.clear()
        box.send_keys(question)
        css(By.ID, "ask-button").click()
        wait_for(
            browser,
            lambda d: (
                d.find_element(By.ID, "answer-text").is_displayed()
                and d.find_element(By.ID, "ask-button").is_enabled()
            ),
            30,
            what,
        )
        return css(By.ID, "answer-text").text

    deadline = time.monotonic() + 30
    said = ask("where are my keys?", "an answer")
    while "kitchen drawer" not in said and time.monotonic() < deadline:
        time.sleep(0.5)  # the transcript may still be on its way into the memory
        said = ask("where are my keys?", "an answer")
    assert "kitchen drawer" in said and "ann" in said, said
    assert css(By.ID, "answer-text").get_attribute("class") == "answered"
    status = css(By.ID, "answer-status")
    assert "evidence" in status.text and "error" not in (status.get_attribute("class") or "")
    hits = browser.find_elements(By.CSS_SELECTOR, "#answers .hit")
    assert len(hits) >= 1 and any(h.find_elements(By.CSS_SELECTOR, "img") for h in hits)
    first_meta = hits[0].find_element(By.CSS_SELECTOR, ".meta").text
    assert "semantic" in first_meta and ":" in first_meta  # its memory and time
    # something never seen: "I have not seen that", no evidence listed
    never = ask("where is the purple vase?", "an abstention")
    assert never.startswith("I have not seen that")
    assert css(By.ID, "answer-text").get_attribute("class") == "abstained"
    assert "no good match" in css(By.ID, "answer-status").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#answers .hit")

    # health: every node reports; fps and latency appear
    nodes_js = "return [...document.querySelectorAll('#health tbody tr')].map(r => r.dataset.node);"
    wait_for(
        browser,
        lambda d: (
            set(d.execute_script(nodes_js))
            >= {"camera", "microphone", "perception", "memory", "web", "rerun"}
        ),
        30,
        "heartbeats of every node",
    )
    wait_for(browser, lambda d: css(By.ID, "latency").text not in ("", "–"), 20, "a latency")
    assert float(css(By.ID, "camera-fps").text) > 0
    perception_row = browser.execute_script(  # the table is rebuilt on every update
        "return document.querySelector('#health tr[data-node=\"perception\"]').textContent;"
    )
    assert "encode" in perception_row

    # the top-down map of the spatial memory: its places graph and objects
    wait_for(
        browser,
        lambda d: int(css(By.ID, "map").get_attribute("data-places") or 0) >= 1,
        20,
        "a place on the map",
    )
    assert "places" in css(By.ID, "map-info").text

    shot = tmp_path / "live-page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")

    # the same question through the JSON API: the answer beside the recalls
    answer = demo.hub.ask("where did I put my keys?")
    assert answer["error"] == "" and answer["hits"]
    assert "kitchen drawer" in answer["answer"]["text"] and answer["answer"]["evidence"]


def test_live_rerun_recording(live):
    """``--rerun FILE.rrd`` on live: after the page test ran, stop and read the file."""
    demo, media_dir = live
    time.sleep(0.5)
    demo.stop()
    entities = rrd_entities(media_dir / "live.rrd")
    assert {"/world/camera/camera/image", "/transcript", "/recall", "/world/places"} <= entities
