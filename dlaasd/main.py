"""`dlaasd`: start the daemon in the foreground (systemd runs it the same way)."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import faulthandler
import logging
import os
import signal
import sys
import threading

import yaml

from . import __version__, notifications, started
from . import config as configuration
from .api import DASHBOARD, PROMETHEUS, make_app, serve
from .daemon import Daemon, StoreRefused
from .inbox import Inbox, InboxError
from .minio_server import MinioError
from .sdnotify import Notifier
from .verbs import experiments
from .verbs.describe import describe
from .verbs.experiments import ROOT

log = logging.getLogger("dlaasd")

# A stop waits this long for what is under way (a Docker or S3 call in a thread), then
# exits anyway: whatever such a call did is found again at the next start, as after a kill.
STOP_GRACE = 15.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="dlaasd",
        description="Deep learning as a service on one machine: queue FfDL training runs, "
        "run them in Docker on the GPUs, keep data and results in an object store.",
    )
    p.add_argument("--state-dir", help="runs, queue database, data cache, bundled MinIO data")
    p.add_argument("--socket", help="the Unix socket dlaasctl talks to")
    p.add_argument(
        "--config",
        help="config file (default: ~/.config/dlaas/dlaasd.yaml, or "
        "/etc/dlaas/dlaasd.yaml as root)",
    )
    p.add_argument("--drop-dir", help="the watched drop folder (default: <state-dir>/inbox)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--print-config", action="store_true", help="print the effective settings and exit"
    )
    p.add_argument("--version", action="version", version=f"dlaasd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = configuration.load(
            args.config,
            overrides={
                "state_dir": args.state_dir,
                "socket": args.socket,
                "drop_dir": args.drop_dir,
                "log_level": args.log_level,
            },
        )
    except configuration.ConfigError as exc:
        print(f"dlaasd: refusing to start: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        yaml.safe_dump(configuration.printable(config), sys.stdout, sort_keys=False)
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    # `kill -USR1` writes every thread's stack to the log: what a slow stop waits on
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    for noisy in ("urllib3", "docker", "watchdog"):  # their lines repeat ours with less sense
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        asyncio.run(run(config))
    except (MinioError, StoreRefused, InboxError) as exc:
        log.error("event=fatal error=%r", str(exc))
        print(f"dlaasd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def run(config: configuration.Config) -> None:
    how = started.how_started()  # before the systemd variables go
    # first, so that no child (the bundled MinIO) inherits systemd's variables
    notifier = Notifier.from_env()
    loop = asyncio.get_running_loop()
    # Docker waits block a thread each for as long as a run trains.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=256))
    daemon = Daemon(config)
    inbox = Inbox(daemon)
    if config.results.mirror_to_drop_dir:
        daemon.lifecycle.after_store.append(inbox.mirror_results)
    told = daemon.context(ROOT)  # what a notification says of a run or an experiment
    daemon.db.on_final.append(
        notifications.final_hook(
            config,
            lambda run: {**describe(told, run, full=False), "usage": daemon.db.usage(run.id)},
            lambda exp_id: experiments.describe(told, daemon.db.experiment(exp_id)),
        )
    )
    outbox = notifications.Outbox(daemon.db, config.notify)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    outbox.start()  # what a killed daemon left to send, too
    await inbox.start()
    app = make_app(daemon)
    dashboard = None
    if config.dashboard.address:
        from .dashboard import serve as serve_dashboard

        private = make_app(daemon)
        dashboard = await serve_dashboard(private, config.state_path, config.dashboard.address)
        app[DASHBOARD] = dashboard
    web_runner = await serve(app, config.socket_path, config.socket_group)
    scrape_runner = None
    if config.prometheus.address:
        from .prometheus import serve_tcp

        scrape_runner = await serve_tcp(app[PROMETHEUS], config.prometheus.address)
    started.write(config.socket_path, how)
    log.info(
        "event=ready socket=%s state_dir=%s store=%s gpus=%s",
        config.socket,
        config.state_dir,
        daemon.objects.endpoint.url,
        daemon.gpus.source,
    )
    notifier.ready(f"serving on {config.socket}")
    watchdog = asyncio.create_task(notifier.keep_alive(), name="watchdog")
    try:
        await stop.wait()
    finally:
        log.info("event=stopping")
        exit_after(STOP_GRACE)
        notifier.stopping("stopping; training containers keep running")
        watchdog.cancel()
        await web_runner.cleanup()
        if scrape_runner:
            await scrape_runner.cleanup()
        if dashboard:
            await dashboard.stop()
        await inbox.stop()
        await outbox.stop()
        await daemon.stop()


def exit_after(seconds: float) -> None:
    """Exit the process in `seconds` if it has not by then: at interpreter exit Python
    joins every worker thread, and one blocked in a call would hold the stop for as
    long as that call lasts (beyond systemd's TimeoutStopSec, to a SIGKILL)."""

    def abandon() -> None:
        busy = [
            t.name
            for t in threading.enumerate()
            if not t.daemon and t is not threading.main_thread()
        ]
        log.warning("event=stop_abandoned seconds=%s threads=%r", seconds, busy)
        faulthandler.dump_traceback(all_threads=True)  # what they were waiting on
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, abandon)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
