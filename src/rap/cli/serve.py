"""``rap serve``: the HTTP API, with the settings and profile in force."""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import logging.config
import os
import shutil
import tempfile

import typer

from rap.cli.context import state
from rap.errors import InvalidInput, MissingDependency

SETTINGS_ENV = "RAP_SERVE_SETTINGS"
"""How ``rap serve --workers N`` hands its resolved settings to the worker processes it starts."""
NO_AUTH_ENV = "RAP_SERVE_NO_AUTH"


def log_config() -> dict:
    """uvicorn's logging, with rap's own loggers on the same handler and format, so every line
    of a server's log, from the first, reads alike (levels as uvicorn prints them)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["rap"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 for every interface."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes; each loads the models once."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve one local user (your own store) without keys; loopback only."),
) -> None:
    """Serve rap's HTTP API (needs the serve extra); every /v1/ route wants an API key from 'rap users add'."""
    if no_auth and not _loopback(host):
        raise InvalidInput(f"--no-auth serves your own concepts to anyone who connects; it listens on loopback only, not {host}")
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency("rap serve needs the serve extra: pip install 'rap-mllm[serve]'") from None
    settings = state(ctx).resolved.settings
    logs = log_config()
    logging.config.dictConfig(logs)
    logging.getLogger("rap.server").info(
        "rap serving on http://%s:%d (%s, %d worker(s))", host, port, "no auth: local user" if no_auth else "API keys", workers
    )
    if workers == 1:
        from rap.server import create_app

        uvicorn.run(create_app(settings, auth=not no_auth), host=host, port=port, log_level="info", log_config=logs)
        return
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    os.environ[NO_AUTH_ENV] = "1" if no_auth else ""
    settings.server_path.mkdir(parents=True, exist_ok=True)
    metrics = tempfile.mkdtemp(prefix="metrics-", dir=settings.server_path)  # the workers' shared counters
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
    try:
        uvicorn.run("rap.cli.serve:worker_app", factory=True, host=host, port=port, workers=workers, log_level="info", log_config=logs)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


def worker_app():
    """The app of one worker process that ``rap serve --workers N`` started."""
    from rap.server import create_app
    from rap.settings import Settings

    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])), auth=not os.environ.get(NO_AUTH_ENV))
