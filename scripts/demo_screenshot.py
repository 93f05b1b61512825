"""A screenshot of the web demo after a generation, on the shipped default, taken in
headless Chromium (Debian's chromium and chromium-driver, with Selenium; `make
test-browser` installs them):

    python scripts/demo_screenshot.py docs/images/demo.png
"""

from __future__ import annotations

import io
import shutil
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i.cli import OneLineParser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python scripts/demo_screenshot.py", description=__doc__)
    p.add_argument("out", help="the PNG to write (refused if it exists, unless --overwrite)")
    p.add_argument("--prompt", default="a red circle above a blue square")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        p.error(f"{out}: exists (pass --overwrite to replace it)")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        p.error("no chromium / chromedriver: install Debian's chromium and chromium-driver")
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from t2i.demo import Demo, build_app

    app = build_app(Demo(device="cpu")).queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 120)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
        box.send_keys(args.prompt)
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 4)
        wait.until(lambda d: "images for" in d.find_element(By.CSS_SELECTOR, "#status").text)
        browser.execute_script("window.scrollTo(0, 0)")
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    finally:
        browser.quit()
        app.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(128).save(out, optimize=True)
    print(f"{out}: {shot.size[0]} x {shot.size[1]}, {out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
