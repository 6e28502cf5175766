"""``rnnlab serve``: checkpoints and the lab on a web page and a JSON API (:func:`rnnlab.serve.serve`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Literal

from rnnlab.cli.common import add_command, option

SERVE_EXAMPLES = """examples:
  rnnlab serve                                         # the lab: open http://127.0.0.1:8000
  rnnlab serve --data-dir texts/                       # the lab may also read and train on texts/*.txt
  rnnlab serve runs/shakespeare                        # then open http://127.0.0.1:8000
  rnnlab serve runs/a runs/b/best.safetensors --port 8080
  rnnlab serve runs/x --host 0.0.0.0                   # other machines too: open the printed URL (token)
  rnnlab serve runs/x --host 0.0.0.0 --token "$TOKEN" --certfile cert.pem --keyfile key.pem   # HTTPS
"""


@dataclass(kw_only=True)
class ServeOptions:
    """``rnnlab serve``: what is served, where, to whom, and the lab's folders; each field is the keyword
    argument of :func:`rnnlab.serve.serve` of the same name."""

    checkpoints: list[str] = option(default_factory=list, positional=True, nargs="*",
                                    help="run folders or .safetensors checkpoints (none: the page is the lab)")
    host: str = option("127.0.0.1", "address to bind", default_shown="127.0.0.1, this machine only")
    port: int = option(8000, "port")
    workers: int = option(4, "threads that run the models")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = option("warning", "server log level")
    token: str | None = option(
        None, "every request must carry this token (Authorization: Bearer TOKEN, or ?token=TOKEN); 16 or more "
              "URL-safe characters", default_shown="none on loopback, a fresh one printed in the URL on any other host")
    certfile: str | None = option(None, "serve HTTPS with this certificate (PEM; with --keyfile)", default_shown=None)
    keyfile: str | None = option(None, "the certificate's private key (PEM; with --certfile)", default_shown=None)
    max_streams: int = option(8, "generations one client (address) may stream at once; one more is refused with 429")
    lab_cache: str | None = option(None, "where the lab keeps the small models it trains on first use",
                                   default_shown="$RNNLAB_LAB_CACHE, else ~/.cache/rnnlab/lab")
    data_dir: str | None = option(None, "a folder whose *.txt files the lab's page may read and train on (by name; "
                                        "the page never names a path)", default_shown=None)
    runs_dir: str | None = option(None, "where runs started from the page go (default: runs/ in the lab's cache); "
                                        "each is an ordinary run folder that rnnlab train --resume and rnnlab sample "
                                        "accept", default_shown=None)
    runs_max_mb: float = option(1024.0, "a new run from the page is refused while the runs folder holds more than this",
                                default_shown="1024")


def cmd_serve(o: ServeOptions) -> int:
    from rnnlab.serve import serve

    def ready(url: str) -> None:
        what = f"{len(o.checkpoints)} model(s) on {url} (the lab at /lab)" if o.checkpoints else f"the lab on {url}"
        print(f"rnnlab: serving {what} (API docs at /docs, schema at /openapi.json); Ctrl-C stops", file=sys.stderr)

    serve(o.checkpoints, host=o.host, port=o.port, workers=o.workers, log_level=o.log_level, on_ready=ready,
          token=o.token, certfile=o.certfile, keyfile=o.keyfile, max_streams=o.max_streams,
          lab_cache=o.lab_cache, data_dir=o.data_dir, runs_dir=o.runs_dir, runs_max_mb=o.runs_max_mb)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "serve", ServeOptions, cmd_serve, help="a page in the browser: sample, probabilities, inside the "
                "network", epilog=SERVE_EXAMPLES,
                description="Serve checkpoints to a web page and a JSON API (OpenAPI at /docs).")


__all__ = ["ServeOptions", "register"]
