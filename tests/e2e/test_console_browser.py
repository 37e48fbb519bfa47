"""The web console in a real browser: headless Chromium (Debian's, with its chromedriver,
driven through selenium) against a broker process. Through the page it creates a topic and
produces a record; a client produces and a consumer group commits; the page must show the
topic, the group's lag and the record arriving in the live tail, with no script errors. A
screenshot is kept as a test artifact (in the test's tmp dir, and in $SLUICE_ARTIFACTS if
set). .ci/run installs chromium and chromium-driver."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from sluice.client.sync import Consumer, Producer

from tests.system_tools import needs
from tests.web_process import WebBrokerProcess

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 30
TOPIC = "browser-orders"
GROUP = "billing"

pytestmark = needs("chromium", "chromedriver",
                   install="apt-get install -y chromium chromium-driver; .ci/run installs them")


@pytest.fixture
def broker(tmp_path):
    process = WebBrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    process.start()
    yield process
    assert process.stop() == 0


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_AVOID_STATS", "true")  # selenium reports nothing anywhere
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless as root on a closed network: without the background-networking flags
    # Chromium keeps trying to reach its update and sync services.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1300,1100", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_console_shows_topics_groups_lag_and_the_live_tail(broker, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)

    def text_of(selector: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, selector).text

    def fill(element_id: str, value: str) -> None:
        field = browser.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)

    browser.get(broker.url + "/")
    wait.until(shown.text_to_be_present_in_element((By.ID, "health"), "ok"))

    # Create a topic through the page.
    fill("create-name", TOPIC)
    fill("create-partitions", "2")
    browser.find_element(By.ID, "create-submit").click()
    wait.until(shown.text_to_be_present_in_element((By.ID, "create-result"), f"created {TOPIC}"))
    wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-topic="{TOPIC}"]')))

    # A client produces; a consumer group reads everything and commits less on partition 0.
    bootstrap = f"127.0.0.1:{broker.port}"
    with Producer(bootstrap) as producer:
        for i in range(20):
            producer.send(TOPIC, b"order-%d" % i, partition=i % 2)
        producer.flush()
    with Consumer(bootstrap, group_id=GROUP, topics=[TOPIC], auto_offset_reset="earliest",
                  auto_commit=False) as consumer:
        seen = 0
        deadline = time.monotonic() + WAIT_S
        while seen < 20 and time.monotonic() < deadline:
            seen += len(consumer.poll(timeout=1))
        assert seen == 20
        consumer.commit({(TOPIC, 0): 4, (TOPIC, 1): 10})
    wait.until(shown.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f'tr[data-group="{GROUP}"] td.lag'), "6"))
    assert text_of(f'tr[data-group-partition="{GROUP}/{TOPIC}/0"] td.lag') == "6"
    assert text_of(f'tr[data-group-partition="{GROUP}/{TOPIC}/1"] td.lag') == "0"
    wait.until(shown.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f'tr[data-partition="{TOPIC}/1"] td:nth-child(4)'), "10"))

    # Follow the topic, then produce through the page: the record arrives in the tail.
    Select(browser.find_element(By.ID, "tail-topic")).select_by_value(TOPIC)
    browser.find_element(By.ID, "tail-start").click()
    wait.until(shown.text_to_be_present_in_element((By.ID, "tail-status"), f"following {TOPIC}"))
    Select(browser.find_element(By.ID, "produce-topic")).select_by_value(TOPIC)
    fill("produce-partition", "1")
    fill("produce-key", "customer-7")
    fill("produce-value", "hello from the browser")
    fill("produce-headers", "source=console, trace=abc")
    browser.find_element(By.ID, "produce-submit").click()
    wait.until(shown.text_to_be_present_in_element(
        (By.ID, "produce-result"), f"written to {TOPIC}[1] at offset 10"))
    row = wait.until(shown.presence_of_element_located(
        (By.CSS_SELECTOR, '#tail-records tr[data-offset="1/10"]')))
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:2] == ["1", "10"] and cells[3:] == [
        "customer-7", "hello from the browser", "source=console, trace=abc"]
    assert cells[2].endswith("Z") and cells[2][:2] == "20"  # an ISO timestamp
    # ... and so does a record from a client.
    with Producer(bootstrap) as producer:
        producer.send(TOPIC, b"from a client", key=b"k", partition=0)
        producer.flush()
    wait.until(shown.text_to_be_present_in_element(
        (By.CSS_SELECTOR, '#tail-records tr[data-offset="0/10"]'), "from a client"))
    # The page's lag follows the new records.
    wait.until(shown.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f'tr[data-group="{GROUP}"] td.lag'), "8"))

    shot = tmp_path / "console.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("SLUICE_ARTIFACTS")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        shutil.copy(shot, os.path.join(artifacts, "console.png"))
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
