"""Headless Chromium for the browser tests: the system browser, driven by Playwright's Python package.

Playwright normally downloads a browser build of its own; these tests never do (``playwright
install`` is not needed): they start the system's Chromium (Debian package ``chromium``) as the
executable. When Playwright or the browser is missing, the tests skip and say which and how to get it.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_executable() -> str | None:
    """Path of a system Chromium: $DYNAT_CHROMIUM, else the first of the usual names on PATH."""
    if os.environ.get("DYNAT_CHROMIUM"):
        return os.environ["DYNAT_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class Chromium:
    """A headless Chromium owned by one worker thread of its own.

    Playwright's sync API refuses to run in a thread whose asyncio loop is running, and the
    main thread of a test session may have one left by a notebook executed in-process (papermill,
    nbclient). So every browser call goes through :meth:`run`, on the worker thread.
    """

    def __init__(self, executable: str):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._pool.submit(self._start, executable).result()

    def _start(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self.browser = self._playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception:
            self._playwright.stop()
            raise

    def run(self, fn, *args, **kwargs):
        """``fn(browser, *args, **kwargs)`` on the browser's thread; its result or its exception."""
        return self._pool.submit(fn, self.browser, *args, **kwargs).result()

    def close(self) -> None:
        def stop():
            self.browser.close()
            self._playwright.stop()

        self._pool.submit(stop).result()
        self._pool.shutdown()


@pytest.fixture(scope="session")
def chromium():
    """A :class:`Chromium`, or a skip that says what is missing."""
    try:
        from playwright.sync_api import Error
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[test]' (make test does it)")
    exe = chromium_executable()
    if exe is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set DYNAT_CHROMIUM to a browser)")
    try:
        browser = Chromium(exe)
    except Error as exc:
        pytest.skip(f"Chromium at {exe} did not start: {exc}".splitlines()[0])
    yield browser
    browser.close()


def save_screenshot(png: bytes, name: str, tmp_dir: Path) -> list[Path]:
    """Write a screenshot under ``tmp_dir/screenshots`` and, when set, ``$DYNAT_SCREENSHOT_DIR``."""
    folders = [tmp_dir / "screenshots"]
    if os.environ.get("DYNAT_SCREENSHOT_DIR"):
        folders.append(Path(os.environ["DYNAT_SCREENSHOT_DIR"]))
    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png)
        written.append(folder / name)
    return written
