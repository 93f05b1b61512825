"""The web demo driven in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, through Selenium) types a prompt, presses generate, waits for the
gallery, and the images it shows are the ones the pipeline draws for that seed.

Skipped, saying why, where Chromium, its driver or Selenium is missing (CI has none):
`make test-browser` installs them and runs this file."""

from __future__ import annotations

import io
import shutil
import socket
import urllib.request

import pytest
from conftest import gen
from PIL import Image

pytest.importorskip("gradio", reason="the web demo needs the demo extra (gradio)")
pytest.importorskip("selenium", reason="selenium is not installed (make test-browser)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "no chromium / chromedriver here (Debian packages chromium, chromium-driver: "
        "make test-browser installs them)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from t2i.demo import Demo, build_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(saved_unclip_pipeline):
    demo = Demo(saved_unclip_pipeline, device="cpu")
    app = build_app(demo).queue()
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield demo, f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_a_prompt_typed_in_the_page_shows_the_images_the_pipeline_draws(served, browser):
    demo, url = served
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    box.send_keys("a red circle above a blue square")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    shown = wait.until(
        lambda d: (
            (imgs := d.find_elements(By.CSS_SELECTOR, "#gallery img")) and len(imgs) >= 4 and imgs
        )
    )
    sources = [img.get_attribute("src") for img in shown][:4]
    got = [
        Image.open(io.BytesIO(urllib.request.urlopen(src).read())).convert("RGB") for src in sources
    ]
    # what the pipeline draws for seed 0 at its recorded settings: image i from seed i
    pipe = demo.pipes["dalle"]
    want = pipe("a red circle above a blue square", generator=[gen(i) for i in range(4)])
    for image, drawn in zip(got, want.images, strict=True):
        assert image.size == (256, 256)
        assert image.resize((16, 16), Image.NEAREST).tobytes() == drawn.convert("RGB").tobytes()
    status = browser.find_element(By.CSS_SELECTOR, "#status").text
    assert "4 images for 'a red circle above a blue square'" in status
