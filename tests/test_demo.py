"""The web demo as a person uses it: a real browser (Debian's Chromium through Selenium) and the real
HTTP API (gradio_client), against the demo served on a loopback port with a tiny cascade."""

from __future__ import annotations

import shutil
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline, randomize_

gr = pytest.importorskip("gradio", reason="the demo extra: pip install 'magicvideo[demo]'")

from magicvideo.pipelines.cascade import MagicVideoCascadePipeline  # noqa: E402
from magicvideo.video_io import read_video  # noqa: E402

FRAMES = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    from magicvideo.demo import build_demo

    keyframes = make_tiny_pipeline(num_frames=FRAMES)
    randomize_(keyframes.unet, seed=2, std=0.05)
    keyframes.register_to_config(fps_range=[4.0, 24.0])
    demo = build_demo(MagicVideoCascadePipeline(keyframes), tmp_path_factory.mktemp("demo"))
    demo.queue(default_concurrency_limit=2)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=False)
    yield f"http://127.0.0.1:{port}"
    demo.close()


def api_call(url: str, prompt: str, seed: int, steps: int = 2):
    from gradio_client import Client

    # httpx's default 5 s read timeout fails on a loaded machine while 20 requests queue; 120 s still bounds the test
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    return client.predict(prompt, "", seed, steps, 5.0, 8, False, False, False, api_name="/generate")


def test_twenty_concurrent_api_requests_all_give_correct_videos(demo_url):
    seeds = list(range(20))
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda s: api_call(demo_url, f"a red ball number {s}", s), seeds))
    for seed, (video, settings) in zip(seeds, results):
        path = video["video"] if isinstance(video, dict) else video
        frames, fps = read_video(path)
        assert frames.shape == (FRAMES, 16, 16, 3) and fps == pytest.approx(8)
        assert settings["seed"] == seed and settings["prompt"] == f"a red ball number {seed}"
    # the same request alone gives the same video: concurrency changes nothing
    alone, _ = api_call(demo_url, "a red ball number 3", 3)
    path = alone["video"] if isinstance(alone, dict) else alone
    assert np.array_equal(read_video(path)[0], read_video(results[3][0]["video"] if isinstance(results[3][0], dict)
                                                           else results[3][0])[0])


def test_bad_input_is_a_message_not_a_stack_trace(demo_url):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Prompt: enter a prompt") as info:
        api_call(demo_url, "   ", 0)
    assert "Traceback" not in str(info.value)
    with pytest.raises(AppError, match="less than minimum value 1"):  # the slider's own bound
        api_call(demo_url, "a ball", 0, steps=0)


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
def test_a_person_types_a_prompt_presses_generate_and_gets_a_playable_video(demo_url, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(demo_url)
        wait = WebDriverWait(driver, 120)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
        box.send_keys("the digit 7 moves to the right")
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        video = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#video video[src]"))
        src = video.get_attribute("src")
        wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0", video))
        duration = driver.execute_script("return arguments[0].duration", video)
        target = tmp_path / "clip.mp4"
        with urllib.request.urlopen(src) as response:
            target.write_bytes(response.read())
    finally:
        driver.quit()
    frames, fps = read_video(target)
    assert frames.shape[0] == FRAMES and fps == pytest.approx(8)
    assert duration == pytest.approx(FRAMES / 8, abs=0.2)  # the browser can play it, at its length


def test_a_first_frame_image_starts_the_clip(demo_url, tmp_path):
    """The optional image input: resized to the frame size (the settings say so), the clip starts from it;
    requests without it (the calls above) are text-to-video as before."""
    from gradio_client import Client, handle_file
    from PIL import Image

    image = tmp_path / "first.png"
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(image)
    client = Client(demo_url, verbose=False, httpx_kwargs={"timeout": 120})
    video, settings = client.predict("a ball", "", 0, 2, 5.0, 8, False, False, False, handle_file(str(image)),
                                     api_name="/generate")
    frames, _ = read_video(video["video"] if isinstance(video, dict) else video)
    assert frames.shape == (FRAMES, 16, 16, 3) and settings["image"] is True
    assert settings["image_note"] == "first frame resized from 30x20 to 16x16 (scaled to cover, centre-cropped)"
    plain, settings = api_call(demo_url, "a ball", 0)
    assert settings["image"] is False
