"""The search page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) types a query, sees result rows, the first player loads audio, "more like this" works.

Skips when the system browser is absent; `.ci/run` installs it. Saves a screenshot (tmp_path, and the
path in $MUSER_SCREENSHOT when set: that is how docs/serve.png is made).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catalogue.threaded_server import threaded_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="Debian's chromium and chromium-driver are not installed (apt-get install them)",
)


@pytest.fixture(scope="module")
def server(catalogue_dir: Path) -> Iterator[tuple[str, list[int]]]:
    """The app under uvicorn on a free loopback port, in a thread; yields (base URL, audio statuses)."""
    from muser import Catalogue
    from muser.catalogue.serve import create_app

    app = create_app(Catalogue.open(catalogue_dir, device="cpu"))
    audio_statuses: list[int] = []

    @app.middleware("http")
    async def record(request, call_next):  # what the browser's players got from /api/audio
        response = await call_next(request)
        if request.url.path.startswith("/api/audio/"):
            audio_statuses.append(response.status_code)
        return response

    with threaded_server(app) as port:
        yield f"http://127.0.0.1:{port}", audio_statuses


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)  # no driver download
    try:
        yield driver
    finally:
        driver.quit()


def test_search_page_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, audio_statuses = server
    wait = WebDriverWait(browser, 60)
    browser.get(url + "/")
    wait.until(lambda d: "tracks" in d.find_element(By.ID, "info").text)
    box = browser.find_element(By.ID, "q")
    box.send_keys("a song of waltz")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.hit")) >= 5)
    rows = browser.find_elements(By.CSS_SELECTOR, "li.hit")
    assert rows[0].find_element(By.CSS_SELECTOR, ".title").text
    assert "results for" in browser.find_element(By.ID, "status").text

    # the first player loads audio: its readyState rises, or its request was answered with 200/206
    def audio_loaded(d) -> bool:
        state = d.execute_script("return document.querySelector('li.hit audio').readyState")
        return state >= 1 or any(s in (200, 206) for s in audio_statuses)

    wait.until(audio_loaded)
    assert all(s in (200, 206) for s in audio_statuses), audio_statuses

    shot = tmp_path / "serve.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("MUSER_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MUSER_SCREENSHOT"])

    first = rows[0].get_attribute("data-key")
    rows[0].find_element(By.CSS_SELECTOR, "button.link").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Tracks like"))
    keys = [r.get_attribute("data-key") for r in browser.find_elements(By.CSS_SELECTOR, "li.hit")]
    assert keys and first not in keys


def test_a_search_lives_in_the_address(server, browser):
    """?q= (and the filters) in the URL runs that search, and a search typed in the page updates the URL:
    a search can be shared, bookmarked and gone back to."""
    from urllib.parse import parse_qs, urlsplit

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    wait = WebDriverWait(browser, 60)
    browser.get(url + "/?q=a+song+of+waltz&year_min=1900")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.hit")) >= 1)
    assert browser.find_element(By.ID, "q").get_attribute("value") == "a song of waltz"
    assert browser.find_element(By.ID, "year_min").get_attribute("value") == "1900"
    assert "a song of waltz" in browser.find_element(By.ID, "status").text

    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("calm piano")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: "calm piano" in d.find_element(By.ID, "status").text)
    assert parse_qs(urlsplit(browser.current_url).query) == {"q": ["calm piano"], "year_min": ["1900"]}
    browser.back()  # the address before: its search again
    wait.until(lambda d: "a song of waltz" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "q").get_attribute("value") == "a song of waltz"
