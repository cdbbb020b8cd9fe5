"""Notebook 02 in JupyterLab, driven the way a person drives it: headless Chromium, Run > Run All Cells, then
one step of the temperature slider.

The server runs from this environment on a free port with a random token and an odd base URL, with its own
config, data and runtime folders and a copy of the notebook in a temp root (so nothing writes into
``notebooks/``). The kernel "dwt" is registered into a temp prefix exactly as ``make lab`` registers it.
Chromium is the system's (Debian ``chromium``; ``DWT_CHROMIUM`` names another), driven by Playwright's Python
API; without either the test skips and says why (``pytest -rs``).

The screenshot goes to ``$DWT_LAB_SCREENSHOT`` (the README's ``docs/lab.png`` was made with it) or else to
``<outputs>/lab/02_loss_derivation.png``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from dwt_lib import lab
from dwt_lib.core.paths import REPO

pytestmark = pytest.mark.browser

NOTEBOOK = "02_loss_derivation.ipynb"
# What Chromium needs on a machine with no network but loopback, as root, without a GPU or a first-run wizard.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Tracebacks render as stderr output (warnings do too, but without "Traceback").
ERROR_SELECTOR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
BASE_URL = "/dwt-lab/"          # a sub-path: catches URLs built by hand (a space breaks jupyter_server itself)


def find_chromium() -> str:
    """The Chromium to drive: ``$DWT_CHROMIUM``, else ``chromium`` (Debian) or its other names on PATH."""
    for cand in (os.environ.get("DWT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    pytest.skip("no Chromium: install Debian's `chromium` (apt-get install chromium; .ci/run does) or set "
                "DWT_CHROMIUM to a Chrome/Chromium executable")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def _sessions(url: str, token: str) -> list[dict]:
    return json.loads(_get(f"{url}api/sessions?token={token}"))


def _wait_for_kernel(url: str, token: str, timeout: float = 90) -> dict:
    """The notebook's session once its kernel is idle and a client (the page) is connected to it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for s in _sessions(url, token):
            k = s.get("kernel") or {}
            if s["path"].endswith(NOTEBOOK) and k.get("execution_state") == "idle" and k.get("connections", 0) > 0:
                return s
        time.sleep(0.5)
    pytest.fail(f"no idle kernel for {NOTEBOOK} within {timeout:.0f} s: {_sessions(url, token)}")


@pytest.fixture
def lab_server(tmp_path):
    """A JupyterLab server on notebooks/02 (copied): yields (url, token, root, log path)."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed: pip install -e '.[dev]'")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    kernels = tmp_path / "kernels"
    lab.register_kernel(str(kernels))
    config = tmp_path / "config"
    # No windowing (every cell stays in the DOM) and no news toast over the screenshot.
    settings = config / "lab" / "user-settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    lab.set_lab_defaults(config)           # what `make lab` writes into the environment's config
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_PATH=os.pathsep.join(filter(None, [str(kernels / "share" / "jupyter"),
                                                         os.environ.get("JUPYTER_PATH")])),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               DWT_OUTPUTS_DIR=str(tmp_path / "outputs"))
    port, token = lab.free_port(), secrets.token_hex(16)
    log = tmp_path / "lab.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(lab.lab_command(port, root, token, base_url=BASE_URL), env=env, stdout=f,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}{BASE_URL}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                _get(f"{url}api/status?token={token}")
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"JupyterLab did not answer within 90 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token, root, log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def chromium():
    """(Chromium's path, Playwright's sync API), or a skip that says what is missing; before the server starts."""
    path = find_chromium()
    return path, pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is not "
                                     "installed: pip install -e '.[dev]'")


def test_skips_with_reason_without_chromium(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        find_chromium()


def test_notebook_02_runs_in_jupyterlab(chromium, lab_server, tmp_path):
    chrome, sync_api = chromium
    url, token, root, log = lab_server
    # Widget callbacks on the kernel's main thread: the server's kernel setting says so (lab.set_lab_defaults).
    plugin, key = lab.SUBSHELL_SETTING
    setting = json.loads(_get(f"{url}lab/api/settings/{plugin}?token={token}"))
    assert setting["settings"].get(key, setting["schema"]["properties"][key]["default"]) == "disabled", setting
    shot = Path(os.environ.get("DWT_LAB_SCREENSHOT") or
                Path(os.environ.get("DWT_OUTPUTS_DIR", REPO / "outputs")) / "lab" / "02_loss_derivation.png")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chrome, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}lab/tree/{NOTEBOOK}?token={token}&reset")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
            # The notebook's own kernel starts without a "select kernel" dialog; wait until the server has it
            # and the page is connected to it (clicking Run before that opens the kernel dialog).
            _wait_for_kernel(url, token)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
            page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
            n_code = page.locator(".jp-NotebookPanel .jp-CodeCell").count()
            # Done when every code cell shows an execution count ("[12]:", not "[*]:" or "[ ]:"), or when a
            # traceback is shown (Run All stops there, so later cells would never run).
            try:
                page.wait_for_function(
                    """a => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
                               .filter(e => /\\[\\d+\\]/.test(e.textContent)).length === a.n
                         || [...document.querySelectorAll(a.errors)].some(e => e.textContent.includes('Traceback'))""",
                    arg={"n": n_code, "errors": ERROR_SELECTOR},
                    timeout=int(os.environ.get("DWT_LAB_TIMEOUT", 180)) * 1000)
            except sync_api.TimeoutError:
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
                prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").all_inner_texts()
                pytest.fail(f"cells did not all run within 180 s; prompts {prompts}; screenshot {shot}; "
                            f"server log:\n{log.read_text()[-3000:]}")
            errors = page.locator(ERROR_SELECTOR + ":has-text('Traceback')")
            error_text = [errors.nth(i).inner_text()[:800] for i in range(errors.count())]
            assert not error_text, f"error output in the rendered notebook: {error_text}"
            kernel_label = page.locator(".jp-Toolbar-kernelName").first.inner_text()
            figures = page.locator(".jp-OutputArea-output img")
            assert figures.count() >= 2, "no figure in the rendered notebook"
            # The knobs: two sliders whose view draws the figure and the gradient table. Moving the temperature
            # slider by one step (keyboard, as a person would) redraws the table at the new temperature.
            knobs = page.locator(".jupyter-widgets.widget-vbox").first
            sliders = knobs.locator(".widget-slider")
            assert sliders.count() == 2, "the temperature and soft-weight sliders are not rendered"
            assert knobs.locator("img").count() == 1 and "tau = 1" in knobs.locator("table").inner_text()
            knobs.evaluate("e => e.scrollIntoView({block: 'start'})")
            table_shows = ("([e, s]) => e.querySelector('table') && "
                           "e.querySelector('table').innerText.includes(s)")
            sliders.first.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowRight")                      # log2 steps of 0.25: tau 1 -> 1.19
            page.wait_for_function(table_shows, arg=[knobs.element_handle(), "tau = 1.19"], timeout=120_000)
            # For the screenshot, typed into the sliders' readouts: the paper's Strong weight at tau = 4.
            # Done when the table shows a_s = 4, or when the redraw printed a traceback instead.
            redrawn_or_failed = ("([e, s]) => (e.querySelector('table') && "
                                 "e.querySelector('table').innerText.includes(s)) || e.innerText.includes('Traceback')")
            first_failure = None
            def type_into(k, value):
                sliders.nth(k).locator(".widget-readout").click()
                page.keyboard.press("Control+A")
                page.keyboard.type(value)
                page.keyboard.press("Enter")

            for attempt in (1, 2):
                if attempt == 1:
                    type_into(0, "4")
                    type_into(1, "4")
                else:
                    # The retry moves tau away, waits for that redraw, and comes back: typing the value the
                    # slider already holds would draw nothing.
                    type_into(0, "2")
                    try:
                        page.wait_for_function(table_shows, arg=[knobs.element_handle(), "tau = 2"], timeout=120_000)
                    except sync_api.TimeoutError:
                        pass
                    type_into(0, "4")
                try:
                    # (the retry waits for the table alone: a traceback from the first try may still be shown)
                    page.wait_for_function(redrawn_or_failed if attempt == 1 else table_shows,
                                           arg=[knobs.element_handle(), "(a_s = 4)"], timeout=120_000)
                except sync_api.TimeoutError:
                    pass
                text = knobs.inner_text()
                tables = knobs.locator("table")
                if "Traceback" not in text and tables.count() and "(a_s = 4)" in tables.first.inner_text():
                    break
                # Once, in CI on a fresh clone, this redraw ended in a traceback inside fig.tight_layout() that
                # did not recur in any later run; its message was cut off. Keep the whole tail of the traceback,
                # type the values once more, and fail only if the second redraw fails too.
                page.screenshot(path=str(shot))
                first_failure = first_failure or text[-2500:]
                if attempt == 2:
                    pytest.fail(f"the sliders did not redraw the table at tau = 4, a_s = 4 (twice); first try "
                                f"ended:\n{first_failure}\nsecond try ended:\n{text[-2500:]}\nscreenshot {shot}")
            if first_failure:
                warnings.warn(f"the first slider redraw failed, the second passed; the first ended:\n{first_failure}")
            assert "tau = 4" in knobs.locator("table").inner_text()
            page.wait_for_timeout(500)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert kernel_label == lab.display_name(), kernel_label
    kernel = next(s["kernel"]["name"] for s in _sessions(url, token) if s["path"].endswith(NOTEBOOK))
    assert kernel == lab.KERNEL_NAME
    spec = json.loads(_get(f"{url}api/kernelspecs?token={token}"))["kernelspecs"][kernel]["spec"]
    assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve(), spec["argv"]
    assert (tmp_path / "outputs" / "smoke" / "figures" / "02_temperature.png").exists()
