#!/usr/bin/env python3
"""Drives the `wfstate serve` console in headless Chromium through chromedriver (WebDriver,
standard library only), as an operator would: open the list, filter it, open a case, move to
an older version (the one that forked) and see the tree and the diff change, and see a new commit appear live.

    console_browser.py CONSOLE_URL DRIVER_URL WFSTATE DATA_DIR [SCREENSHOT_DIR]

WFSTATE and DATA_DIR make the live commit. Exit 0 when every step holds; prints the page's
load time. Every wait is bounded (20 s)."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

WAIT = 20.0


class Browser:
    def __init__(self, driver):
        self.driver = driver.rstrip("/")
        options = {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"],
        }
        binary = os.environ.get("WFSTATE_CHROMIUM", "/usr/bin/chromium")
        if os.path.exists(binary):
            options["binary"] = binary
        session = self.call("POST", "/session", {
            "capabilities": {"alwaysMatch": {"browserName": "chrome",
                                             "goog:chromeOptions": options}}})
        self.session = session["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.driver + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def run(self, script, *args):
        return self.call("POST", f"/session/{self.session}/execute/sync",
                         {"script": script, "args": list(args)})

    def go(self, url):
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def wait(self, script, what, *args):
        """Polls `script` until it returns something truthy; fails after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            value = self.run(script, *args)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"waited {WAIT} s for {what}")

    def screenshot(self, path):
        png = self.call("GET", f"/session/{self.session}/screenshot")
        with open(path, "wb") as file:
            file.write(base64.b64decode(png))

    def close(self):
        self.call("DELETE", f"/session/{self.session}")


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def main(argv):
    if len(argv) not in (5, 6):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    console, driver, wfstate, data_dir = argv[1:5]
    shots = argv[5] if len(argv) == 6 else None
    browser = Browser(driver)
    try:
        # The list: the page's load time is from navigation to the table drawn.
        started = time.monotonic()
        browser.go(console)
        rows = browser.wait("return document.querySelectorAll('#case-list tbody tr').length",
                            "the case list")
        loaded_ms = (time.monotonic() - started) * 1000
        check(rows > 0, "the list shows cases")
        if shots:
            browser.screenshot(os.path.join(shots, "console-list.png"))

        # Filtered by status: every row is a done case.
        browser.run("document.getElementById('filter-status').value = 'done';"
                    "document.querySelector('#filters button').click();")
        browser.wait("return location.hash.includes('status=done') && "
                     "document.querySelectorAll('#case-list tbody tr').length > 0 && "
                     "[...document.querySelectorAll('#case-list tbody tr td:nth-child(2)')]"
                     ".every(td => td.textContent.startsWith('done'))",
                     "the list filtered to done cases")

        # A case: opened from the list, its timeline and its tree at the newest version.
        case = browser.run("const row = document.querySelector('#case-list tbody tr');"
                           "row.click(); return row.dataset.case;")
        versions = browser.wait("return document.getElementById('state-version') && "
                                "document.querySelector('#scope-tree') && "
                                "document.querySelectorAll('#timeline tbody tr').length",
                                "the case page")
        check(versions >= 3, f"case {case} has a timeline of {versions} versions")
        newest = browser.run("return [document.getElementById('scope-tree').innerHTML,"
                             " document.getElementById('diff').innerHTML]")

        # An older version: the one that forked (other writers' commits may come before it,
        # so it is found on the timeline). The slider moves there; the tree draws the new
        # scopes with their active tokens, and the diff shows them added.
        fork = int(browser.run(
            "const row = [...document.querySelectorAll('#timeline tbody tr')]"
            ".find(r => r.textContent.includes('enter_scope'));"
            "return row ? row.dataset.version : '0';"))
        check(0 < fork < versions, f"case {case} forked at an older version ({fork})")
        browser.run("const s = document.getElementById('slider'); s.value = String(arguments[0]);"
                    "s.dispatchEvent(new Event('input'));", fork)
        browser.wait("return document.getElementById('state-version').textContent === "
                     "String(arguments[0]) && document.querySelector('#scope-tree .token-active')"
                     " && document.querySelector('#diff .add')", f"version {fork}", fork)
        older = browser.run("return [document.getElementById('scope-tree').innerHTML,"
                            " document.getElementById('diff').innerHTML]")
        check(older[0] != newest[0], "the scope tree changes with the version")
        check(older[1] != newest[1], "the diff changes with the version")
        if shots:
            browser.screenshot(os.path.join(shots, "console-case.png"))

        # Live: the case's newest page gets a commit made elsewhere, without a reload.
        browser.run("location.hash = '#/case/' + encodeURIComponent(arguments[0])", case)
        browser.wait("return document.querySelectorAll('#timeline tbody tr').length === "
                     "arguments[0] && document.getElementById('live').textContent.startsWith('live')",
                     "the newest version", versions)
        browser.run("window.notReloaded = true")
        subprocess.run([wfstate, "--data-dir", data_dir, "commit", case],
                       input=b'[{"op": "set_metadata", "value": {"seen": "live"}}]',
                       check=True, capture_output=True, timeout=60)
        browser.wait("return document.querySelectorAll('#timeline tbody tr').length === "
                     "arguments[0] + 1 && window.notReloaded === true",
                     "the new commit to appear live", versions)
    finally:
        browser.close()
    print(f"every step held; the list page loaded in {loaded_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
