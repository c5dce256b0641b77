"""The web dashboard at 10,000 runs, in headless Chromium, as ratios to the JSON API call
underneath (`GET /v1/runs?limit=50` over the socket):

- the runs page's data (`/ui/runs`, through `dlaasctl ui`): target at most 3;
- the runs page's first render (from navigation to the table drawn): reported;
- an update (the server's look at the page plus the browser's redraw): target at most 5;
  and how long after a submission the new run shows (bounded by the 0.5 s look);
- a metric of 100,000 points: the downsampled series against the raw points' API call
  (target at most 1.5: downsampling costs less than sending them all), and its chart drawn.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import urllib.request

import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from benchmarks.common import ensure_image, object_store, parse, report
from benchmarks.scale import seeded_daemon
from dlaasd.database import Database
from tests.harness import manifest

TARGET_DATA = 3.0
TARGET_UPDATE = 5.0
TARGET_METRICS = 1.5
N_RUNS = 10_000
N_POINTS = 100_000


def median_s(fn, repeat: int) -> float:
    values = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return statistics.median(values)


def seed_metrics(state, run_id: str, n: int) -> None:
    db = Database(state / "dlaas.db")
    rows = [
        {"run_id": run_id, "step": i, "name": "loss", "value": 1 / (i + 1), "time": 0.0}
        for i in range(n)
    ]
    with db.db.conn:
        db.db["metrics"].insert_all(rows, batch_size=5000)
    db.db.conn.close()


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--window-size=1280,900", "--disable-gpu", "--no-sandbox"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(driver, script: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(script)


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    repeat = 5 if args.quick else 20
    with object_store() as minio, seeded_daemon(minio, N_RUNS) as (daemon, ids, _):
        seed_metrics(daemon.state, ids[0], N_POINTS)  # beside the daemon: SQLite's WAL
        ui = subprocess.Popen(
            [sys.executable, "-m", "dlaasctl.cli", "ui", "--no-browser", "--port", "0"],
            env=daemon.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert ui.stdout is not None
        ui.stdout.readline()
        url = ui.stdout.readline().strip()
        base, _, token = url.partition("/?token=")
        driver = browser()
        try:
            api = daemon.api

            def get(path: str) -> bytes:
                sep = "&" if "?" in path else "?"
                with urllib.request.urlopen(f"{base}{path}{sep}token={token}") as r:
                    return r.read()

            # both read the JSON's bytes, neither parses it
            api_s = median_s(lambda: api.request("GET", "/v1/runs?limit=50").read(), repeat * 5)
            data_s = median_s(lambda: get("/ui/runs?limit=50"), repeat * 5)
            raw_s = median_s(lambda: api.request("GET", f"/v1/runs/{ids[0]}/metrics").read(), 3)
            down_s = median_s(lambda: get(f"/ui/runs/{ids[0]}/metrics"), 3)

            firsts = []
            for _ in range(repeat):
                driver.get("about:blank")
                driver.get(f"{url}#/runs")
                done = wait(
                    driver,
                    "const r = window.dlaas && window.dlaas.renders[0];"
                    "return r && r.ids.length === 50 ? r.at + r.took : null",
                )
                firsts.append(done / 1000)
            first_s = statistics.median(firsts)

            # updates: a new run submitted while the page is open
            folder = daemon.root / "new"
            folder.mkdir()
            (folder / "manifest.yml").write_text(yaml.safe_dump(manifest("true", name="new")))
            seen, redraws = [], []
            for _ in range(max(3, repeat // 4)):
                run_id = daemon.submit(folder)
                submitted = time.time() * 1000
                shown = wait(
                    driver,
                    "const r = window.dlaas.renders.find(r => r.ids.includes(arguments[0]));"
                    "return r ? [performance.timeOrigin + r.at + r.took, r.took] : null".replace(
                        "arguments[0]", repr(run_id)
                    ),
                )
                seen.append((shown[0] - submitted) / 1000)
                redraws.append(shown[1] / 1000)
            redraw_s = statistics.median(redraws)
            seen_s = statistics.median(seen)

            driver.get(f"{url}#/runs/{ids[0]}")
            chart_ms = wait(
                driver,
                "const b = document.querySelector('[data-metric=\"loss\"]');"
                "return b && b.dataset.points ? performance.now() : null",
            )
            points = driver.execute_script("return window.dlaas.charts['loss'].data[0].length")
        finally:
            driver.quit()
            ui.terminate()
            ui.wait()
    data_ratio = data_s / api_s
    update_ratio = (data_s + redraw_s) / api_s
    metrics_ratio = down_s / raw_s
    ok = (
        data_ratio <= TARGET_DATA
        and update_ratio <= TARGET_UPDATE
        and metrics_ratio <= TARGET_METRICS
    )
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    report(
        "ui",
        [
            ("GET /v1/runs?limit=50 (socket, 10,000 runs)", ms(api_s)),
            ("runs page data (/ui/runs)", f"{ms(data_s)} ({data_ratio:.2f}x)"),
            ("runs page first render", f"{ms(first_s)} ({first_s / api_s:.1f}x)"),
            ("update: data + redraw", f"{ms(data_s + redraw_s)} ({update_ratio:.2f}x)"),
            ("a new run shown after", f"{ms(seen_s)} (the page looks every 0.5 s)"),
            (f"metric of {N_POINTS:,} points, raw API", ms(raw_s)),
            (
                "  downsampled for the chart",
                f"{ms(down_s)} ({metrics_ratio:.2f}x), {points} points",
            ),
            ("  run page with its chart drawn", f"{chart_ms:.0f} ms after navigation"),
        ],
        data_ratio,
        f"data <= {TARGET_DATA}x, update <= {TARGET_UPDATE}x, 100k metric <= {TARGET_METRICS}x",
        ok,
        data_ratio=round(data_ratio, 3),
        first_render_ratio=round(first_s / api_s, 3),
        update_ratio=round(update_ratio, 3),
        metrics_ratio=round(metrics_ratio, 3),
        new_run_shown_s=round(seen_s, 3),
    )


if __name__ == "__main__":
    main()
