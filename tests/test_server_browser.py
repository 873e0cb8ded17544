"""The demo page of ``ivfuse serve`` in a real browser: headless Chromium driven by Selenium.

Skipped with the reason where Chromium or its driver is not installed (Debian: ``apt install
chromium chromium-driver``). Set ``IVFUSE_SCREENSHOT=docs/images/web_demo.png`` to also save the
page as the screenshot the docs show.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'ivfuse[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install 'ivfuse[test]'")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from .conftest import EXAMPLES  # noqa: E402
from .server_process import running_server  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    missing = " and ".join(name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path)
    pytest.skip(f"needs a headless Chromium: {missing} not found (apt install chromium chromium-driver)", allow_module_level=True)

# Inference of a 640x480 pair on a busy 2-core machine, plus the browser's decoding.
WAIT = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("serve"), "--threads", "1") as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="ivfuse-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Root in a container: no sandbox; and nothing that reaches the network besides the server.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-proxy-server",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1500", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_result(browser) -> None:
    """Until the fused image is decoded or the page shows an error (then fail with it)."""
    WebDriverWait(browser, WAIT).until(lambda b: b.execute_script(
        "const img = document.getElementById('fused-image');"
        "return (img.complete && img.naturalWidth > 0 && !document.getElementById('results').hidden)"
        " || document.getElementById('status').classList.contains('error');"))
    status = browser.find_element(By.ID, "status")
    assert "error" not in status.get_attribute("class"), status.text


def test_upload_a_pair_and_see_the_fused_image(server, browser):
    browser.get(server.url + "/")
    browser.find_element(By.ID, "ir-file").send_keys(str(EXAMPLES / "ir" / "00004N.png"))
    browser.find_element(By.ID, "vis-file").send_keys(str(EXAMPLES / "vi" / "00004N.png"))
    button = browser.find_element(By.ID, "fuse-button")
    WebDriverWait(browser, 10).until(lambda b: button.is_enabled())
    button.click()
    wait_for_result(browser)

    fused = browser.find_element(By.ID, "fused-image")
    assert fused.is_displayed()
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", fused) == [640, 480]
    assert fused.size["width"] > 200  # laid out on screen, not a collapsed box
    overlay = browser.find_element(By.ID, "overlay-image")
    assert overlay.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", overlay) == 640
    legend = browser.find_element(By.ID, "legend").text
    for name in ("car", "person", "bike", "curve", "car stop", "guardrail", "color cone", "bump"):
        assert name in legend
    rows = browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")
    assert [row.get_attribute("data-metric") for row in rows] == ["Qabf", "EN", "PSNR", "SF", "SD", "VIF"]
    for row in rows:
        float(row.find_element(By.CSS_SELECTOR, "td.value").text)
    for link in ("download-fused", "download-overlay", "download-labels", "download-metrics"):
        assert browser.find_element(By.ID, link).get_attribute("href").startswith("blob:")


def test_bundled_example_runs_and_a_bad_file_shows_the_error(server, browser, tmp_path):
    browser.get(server.url + "/")
    example = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "button.example[data-example='00055D']"))[0]
    example.click()
    wait_for_result(browser)
    assert browser.execute_script("return document.getElementById('fused-image').naturalWidth") == 640
    screenshot = os.environ.get("IVFUSE_SCREENSHOT")
    if screenshot:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(screenshot)

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    browser.find_element(By.ID, "vis-file").send_keys(str(not_an_image))
    browser.find_element(By.ID, "fuse-button").click()
    WebDriverWait(browser, WAIT).until(lambda b: "error" in b.find_element(By.ID, "status").get_attribute("class"))
    assert browser.find_element(By.ID, "status").text.startswith("vis file 'notes.png': cannot read image")
