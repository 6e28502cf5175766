"""``rnnlab data``: the corpora rnnlab knows, listed and downloaded (:mod:`rnnlab.data.download`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rnnlab.cli.common import add_command, add_group, option, quiet_option

DATA_EXAMPLES = """examples:
  rnnlab data list
  rnnlab data download tinyshakespeare          # into ~/.cache/rnnlab/data, checksum verified
  rnnlab data download tinyshakespeare --dir data/
"""


@dataclass(kw_only=True)
class DataListOptions:
    """``rnnlab data list`` takes no options."""


@dataclass(kw_only=True)
class DownloadOptions:
    """``rnnlab data download``: which corpus, from where, into which folder."""

    name: str = option(help="corpus name (see 'rnnlab data list')", positional=True)
    dir: str | None = option(None, "destination folder", default_shown="~/.cache/rnnlab/data or $RNNLAB_DATA")
    url: str | None = option(None, "fetch from this URL instead (a mirror); the checksum still applies",
                             default_shown=None)
    quiet: bool = quiet_option()


def cmd_list(o: DataListOptions) -> int:
    from rnnlab.data import download

    for name, src in download.CORPORA.items():
        print(f"{name:16s} {src.size:>10,d} bytes  {src.description}")
    return 0


def cmd_download(o: DownloadOptions) -> int:
    from rnnlab.data import download

    print(download.download(o.name, dest_dir=o.dir, url=o.url, progress=not o.quiet))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    dsub = add_group(sub, "data", help="list and download corpora", epilog=DATA_EXAMPLES)
    add_command(dsub, "list", DataListOptions, cmd_list, help="corpora rnnlab knows how to download",
                epilog="example:\n  rnnlab data list\n")
    add_command(dsub, "download", DownloadOptions, cmd_download, help="download a corpus and verify its checksum",
                epilog=DATA_EXAMPLES)


__all__ = ["DataListOptions", "DownloadOptions", "register"]
