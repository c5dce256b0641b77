"""The web dashboard (`dlaasctl ui`) in a real headless Chromium (Debian's chromium and
chromium-driver, installed by scripts/setup), against a real daemon, Docker and MinIO.
Each page's screenshot is written to docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness import REPO, manifest, model
from tests.test_experiments import EMETRICS, finished, sweep
from tests.test_users import ALICE, BOB, GROUP, demoted, lab_users, user_folder

assert lab_users  # a fixture, used by name below

pytestmark = pytest.mark.integration

SHOTS = REPO / "docs" / "screenshots"
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT = 120  # seconds a page may take to show what the daemon already says


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.fail("chromium and chromium-driver are missing; scripts/setup installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--window-size=1280,900", "--disable-gpu"):
        options.add_argument(flag)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()


def lab_env(socket: Path) -> dict:
    """For dlaasctl run by a lab user: the system's Python (the test's may be under a home
    closed to them) with the checkout and this environment's packages (aiohttp) on its path."""
    paths = [str(REPO), str(REPO / "client"), sysconfig.get_paths()["purelib"]]
    return {
        "DLAAS_SOCKET": str(socket),
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "PYTHONPATH": ":".join(paths),
    }


class Dashboard:
    """A `dlaasctl ui` process and its URL; user: run it as this lab user."""

    def __init__(self, env: dict, user: str | None = None):
        python = "/usr/bin/python3" if user else sys.executable
        self.proc = subprocess.Popen(
            [python, "-m", "dlaasctl.cli", "ui", "--no-browser", "--port", "0"],
            env=env,
            preexec_fn=demoted(user) if user else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "the dashboard of USER, until Ctrl-C:"
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.proc.stderr.read()
        self.base, _, self.token = self.url.partition("/?token=")

    def page(self, route: str) -> str:
        return f"{self.url}#{route}"

    def fetch(self, path: str, method: str = "GET", token: str | None = None):
        """(status, body) of a request with the token (or another) in the URL."""
        sep = "&" if "?" in path else "?"
        url = f"{self.base}{path}{sep}token={self.token if token is None else token}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method)) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def dashboard():
    opened: list[Dashboard] = []

    def open_(daemon_or_env, **kw) -> Dashboard:
        env = daemon_or_env if isinstance(daemon_or_env, dict) else daemon_or_env.env
        opened.append(Dashboard(env, **kw))
        return opened[-1]

    yield open_
    for dash in opened:
        dash.close()


def wait_for(driver, what, timeout: float = WAIT):
    """Until `what(driver)` is true; live pages redraw, so an element may go stale meanwhile."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(lambda d: what(d))


def text(driver, css: str) -> str:
    """An element's text, read in one step (the page may redraw it between two)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
    )


def status_of(driver, run_id: str) -> str | None:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.dataset.status : null",
        f'tr[data-run="{run_id}"]',
    )


def shoot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_a_run_is_seen_queued_then_completed_and_halted_from_the_browser(
    make_daemon, dashboard, browser, tmp_path
):
    d = make_daemon(capacity={"cpus": 1})
    blocker = d.submit(model(tmp_path / "b", manifest("sleep 600", name="blocker", cpus=1)))
    d.wait(blocker, "PROCESSING")
    waiting = d.submit(model(tmp_path / "w", manifest("echo done", name="waiting", cpus=1)))
    dash = dashboard(d)

    browser.get(dash.page("/runs"))
    wait_for(browser, lambda b: status_of(b, waiting) == "QUEUED")
    assert "#1 of 1" in text(browser, f'tr[data-run="{waiting}"]')  # its place in the queue
    browser.execute_script("window.notReloaded = true")
    shoot(browser, "runs")

    # halt the blocker from its page: the button is there for its owner
    browser.get(dash.page(f"/runs/{blocker}"))
    wait_for(browser, lambda b: b.find_elements(By.ID, "halt"))
    browser.find_element(By.ID, "halt").click()
    browser.switch_to.alert.accept()
    assert d.wait(blocker, timeout=60)["status"] == "HALTED"
    wait_for(browser, lambda b: text(b, "#run-status") == "HALTED")
    assert not browser.find_elements(By.ID, "halt")  # ended: nothing left to halt

    # the queued run starts and ends; the runs page follows it without a reload
    browser.get(dash.page("/runs"))
    browser.execute_script("window.notReloaded = true")
    wait_for(browser, lambda b: status_of(b, waiting) == "COMPLETED")
    assert browser.execute_script("return window.notReloaded") is True
    assert d.run(waiting)["status"] == "COMPLETED"

    # filters: by name, and by a status none has
    browser.get(dash.page("/runs?name=waiting"))
    wait_for(browser, lambda b: status_of(b, waiting) == "COMPLETED")
    assert status_of(browser, blocker) is None
    browser.get(dash.page("/runs?status=QUEUED"))
    wait_for(browser, lambda b: text(b, "#count").endswith("of 0"))

    browser.get(dash.page("/machine"))
    wait_for(browser, lambda b: "ok" in text(b, "#docker"))
    assert "ok" in text(browser, "#store")
    assert "of 1" in text(browser, "#capacity")  # CPUs: used of 1
    shoot(browser, "machine")

    # usage: the two runs that ended, as `dlaasctl usage` counts them
    usage = d.api.json("GET", "/v1/usage?since=1d")
    assert usage["total"]["runs"] == 2
    browser.get(dash.page("/usage?since=1d"))
    wait_for(browser, lambda b: text(b, "tr.total td:nth-child(2)") == "2")
    owner = usage["groups"][0]
    assert text(browser, f'tr[data-key="{owner["key"]}"] td:nth-child(2)') == "2"
    shoot(browser, "usage")


TRAIN = (
    EMETRICS.replace("time.sleep(0.7)", "time.sleep(0.3)")
    + """
print("all points written", flush=True)
time.sleep(600)
"""
)


def test_a_metric_chart_draws_the_runs_points_as_they_come(daemon, dashboard, browser, tmp_path):
    run_id = daemon.submit(model(tmp_path / "m", manifest("python3 train.py"), {"train.py": TRAIN}))
    dash = dashboard(daemon)
    daemon.wait(run_id, "PROCESSING")
    browser.get(dash.page(f"/runs/{run_id}"))
    wait_for(browser, lambda b: b.find_elements(By.ID, "halt"))
    browser.execute_script("window.notReloaded = true")

    def drawn(b) -> int:
        boxes = b.find_elements(By.CSS_SELECTOR, '[data-metric="test.loss"]')
        return int(boxes[0].get_attribute("data-points")) if boxes else 0

    wait_for(browser, lambda b: drawn(b) == 6)
    wait_for(browser, lambda b: "all points written" in text(b, "#log"))
    assert browser.execute_script("return window.notReloaded") is True
    xs, ys = browser.execute_script(
        "const u = window.dlaas.charts['test.loss']; return [u.data[0], u.data[1]]"
    )
    points = daemon.api.json("GET", f"/v1/runs/{run_id}/metrics?name=test.loss")["points"]
    assert xs == [p["step"] for p in points] == [1, 2, 3, 4, 5, 6]
    assert ys == pytest.approx([p["value"] for p in points])
    assert daemon.run(run_id)["status"] == "PROCESSING"  # all of it came while it trained
    shoot(browser, "run")

    # the log, searched
    browser.find_element(By.ID, "search").send_keys("POINTS")
    assert text(browser, "#matches") == "1 matching lines"
    assert daemon.ctl("halt", run_id).returncode == 0
    wait_for(browser, lambda b: text(b, "#run-status") == "HALTED")
    wait_for(browser, lambda b: "metrics.jsonl" in text(b, "#files"))
    # a result file downloads through the dashboard
    status, body = dash.fetch(f"/v1/runs/{run_id}/results/metrics.jsonl")
    assert status == 200 and "test.loss" in body


LONG = """
import json, os
with open(os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt"), "a") as f:
    for step in range(1, 501):
        f.write(json.dumps({"grouplabel": "test", "etimes": {"iteration": {"value": step}},
                            "values": {"loss": {"value": 1.0 / step}}}) + "\\n")
"""


def test_the_metrics_api_thins_a_long_series_for_a_chart(daemon, tmp_path):
    run_id = daemon.submit(model(tmp_path / "m", manifest("python3 train.py"), {"train.py": LONG}))
    assert daemon.wait(run_id)["status"] == "COMPLETED"
    every = daemon.api.json("GET", f"/v1/runs/{run_id}/metrics")["points"]
    assert len(every) == 500
    thinned = daemon.api.json("GET", f"/v1/runs/{run_id}/metrics?points=40")["points"]
    assert len(thinned) <= 40 and thinned[0] == every[0] and thinned[-1] == every[-1]
    assert all(p in every for p in thinned)


def test_the_experiment_page_ranks_trials_and_offers_the_best_config(
    daemon, dashboard, browser, tmp_path
):
    exp_id = daemon.ctl_json("experiment", "run", sweep(tmp_path, "grid"))["id"]
    e = finished(daemon, exp_id)
    dash = dashboard(daemon)
    browser.get(dash.page(f"/experiments/{exp_id}"))
    wait_for(browser, lambda b: text(b, "#exp-status") == e["status"])
    rows = browser.find_elements(By.CSS_SELECTOR, "#trials tr[data-trial]")
    assert [r.get_attribute("data-trial") for r in rows] == [t["id"] for t in e["runs"]]
    assert "quality: 3" in text(browser, "#best-yaml")  # the best, maximised
    curves = browser.execute_script("const u = window.dlaas.charts['curves']; return u.data.length")
    assert curves == 1 + 3  # the steps, then one curve a trial
    scatter = browser.execute_script(
        "const u = window.dlaas.charts['vs quality']; return [u.data[0], u.data[1]]"
    )
    assert scatter == [[1, 2, 3], [pytest.approx(3), pytest.approx(6), pytest.approx(9)]]
    shoot(browser, "experiment")
    browser.get(dash.page("/experiments"))
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-experiment="{exp_id}"]'))


def test_a_wrong_or_missing_token_sees_nothing(daemon, dashboard, browser, tmp_path):
    run_id = daemon.submit(model(tmp_path / "m", manifest("echo secret-output", name="private")))
    daemon.wait(run_id)
    dash = dashboard(daemon)
    for path in ("/", "/ui/runs", f"/ui/runs/{run_id}", "/v1/runs", "/static/app.js"):
        for token in ("", "wrong", dash.token[:-1]):
            status, body = dash.fetch(path, token=token)
            assert status == 403 and run_id not in body and "private" not in body, (path, body)
    status, body = dash.fetch("/ui/runs")
    assert status == 200 and run_id in body  # the right token does see it
    # the browser: a wrong token gets the refusal only (and no cookie for later)
    browser.delete_all_cookies()
    browser.get(f"{dash.base}/?token=wrong#/runs")
    shown = browser.find_element(By.TAG_NAME, "body").text
    assert shown.startswith("403") and run_id not in browser.page_source
    browser.get(f"{dash.base}/ui/runs")
    assert run_id not in browser.page_source
    # a change asked from another site's page is refused, even with the cookie
    request = urllib.request.Request(
        f"{dash.base}/v1/runs/{run_id}?token={dash.token}",
        method="DELETE",
        headers={"Origin": "http://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 403
    assert daemon.run(run_id)["status"] == "COMPLETED"


FORGE = """
import sys
from pathlib import Path
from dlaasctl.http import ApiError, Client, Unreachable
public, private, run_id = sys.argv[1:]
header = {"X-Dlaas-Acting-As": "0:0"}
try:
    Client(Path(private)).request("POST", f"/v1/runs/{run_id}/halt", headers=header)
    print("private:open")
except Unreachable:
    print("private:denied")
try:
    Client(Path(public)).request("POST", f"/v1/runs/{run_id}/halt", headers=header)
    print("public:halted")
except ApiError as exc:
    print(f"public:{exc.status}")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_daemons_dashboard_gives_each_user_a_token_of_their_own(make_daemon, browser, tmp_path):
    d = make_daemon(dashboard={"address": f"127.0.0.1:{free_port()}"})
    run_id = d.submit(model(tmp_path / "m", manifest("echo hi", name="served")))
    d.wait(run_id)
    r = d.ctl("ui", "--daemon")
    assert r.returncode == 0, r.stderr
    url = r.stdout.split()[-1]
    assert url.startswith("http://127.0.0.1:") and "token=" in url
    assert d.ctl("ui", "--daemon").stdout.split()[-1] == url  # one token a user
    browser.delete_all_cookies()
    browser.get(f"{url}#/runs")
    wait_for(browser, lambda b: status_of(b, run_id) == "COMPLETED")
    assert text(browser, "#me") == "root"
    base = url.partition("/?token=")[0]
    for token in ("", "wrong"):
        try:
            urllib.request.urlopen(f"{base}/ui/runs?token={token}")
            raise AssertionError("a wrong token was let in")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403 and run_id not in exc.read().decode()
    # the acting-as header counts on the daemon's private socket only
    private = d.state / "dashboard" / "api.sock"
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    # a daemon without one says how to get one
    plain = make_daemon()
    r = plain.ctl("ui", "--daemon")
    assert r.returncode == 1 and "dlaasctl ui" in r.stderr and "dashboard.address" in r.stderr


@pytest.mark.needs_root  # makes the lab users
@pytest.mark.usefixtures("lab_users")
def test_another_users_run_has_no_halt_button_and_its_halt_is_refused(
    make_daemon, dashboard, browser
):
    d = make_daemon(socket_group=GROUP, dashboard={"address": f"127.0.0.1:{free_port()}"})
    os.chmod(d.root, 0o755)
    env = lab_env(d.socket)

    def as_alice(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["/usr/bin/python3", "-m", "dlaasctl.cli", *args],
            env=env,
            preexec_fn=demoted(ALICE),
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = as_alice("train", str(user_folder(ALICE, "sleep 600") / "manifest.yml"))
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    d.wait(run_id, "PROCESSING")
    bobs = dashboard(env, user=BOB)
    browser.get(bobs.page(f"/runs/{run_id}"))
    wait_for(browser, lambda b: text(b, "#run-status") == "PROCESSING")
    assert text(browser, "#me") == BOB
    assert f"belongs to {ALICE}" in text(browser, "#private")
    assert not browser.find_elements(By.ID, "halt")
    shoot(browser, "run-of-another")
    status, body = bobs.fetch(f"/v1/runs/{run_id}/halt", method="POST")
    assert status == 403 and f"belongs to {ALICE}" in json.loads(body)["error"]["message"]
    assert d.run(run_id)["status"] == "PROCESSING"

    # the daemon's dashboard: Bob's token acts as Bob
    r = subprocess.run(
        ["/usr/bin/python3", "-m", "dlaasctl.cli", "ui", "--daemon"],
        env=env,
        preexec_fn=demoted(BOB),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    bobs_url = r.stdout.split()[-1]
    base, _, token = bobs_url.partition("/?token=")
    request = urllib.request.Request(f"{base}/v1/runs/{run_id}/halt?token={token}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 403 and f"belongs to {ALICE}" in refused.value.read().decode()
    browser.get(f"{bobs_url}#/runs/{run_id}")
    wait_for(browser, lambda b: text(b, "#run-status") == "PROCESSING")
    assert text(browser, "#me") == BOB and not browser.find_elements(By.ID, "halt")
    # Bob can neither reach the private socket nor be believed on the public one
    forged = subprocess.run(
        [
            "/usr/bin/python3",
            "-c",
            FORGE,
            str(d.socket),
            str(d.state / "dashboard" / "api.sock"),
            run_id,
        ],
        env=env,
        preexec_fn=demoted(BOB),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forged.stdout.split() == ["private:denied", "public:403"], forged.stderr
    assert d.run(run_id)["status"] == "PROCESSING"
    assert as_alice("halt", run_id).returncode == 0
