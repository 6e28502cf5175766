"""rnnlab.data.download against a real HTTP server on 127.0.0.1; never the internet.

Every download goes to ``tmp_path``; ``$HOME`` is pointed there too, so the default
``~/.cache/rnnlab/data`` cannot touch the real home folder. The tinyshakespeare and
warpeace tests use the project's shared copies and skip when they are absent; the
error paths use a small synthetic corpus put into ``CORPORA`` by monkeypatch.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rnnlab.cli import main
from rnnlab.data import download as dl
from rnnlab.errors import DownloadError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
WARPEACE = SHARED / "warpeace" / "warpeace_input.txt"
BOM = b"\xef\xbb\xbf"

TINY = b"It is a truth universally acknowledged\nthat a test corpus must be small.\n" * 40
TINY_RAW = BOM + TINY.replace(b"\n", b"\r")  # the form a post-processed source serves


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    """Every file under ``root``, hidden ones (temporary .part files) included."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def needs(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"shared corpus {path} is not available")


# A local server -------------------------------------------------------------------


@dataclass
class Server:
    root: Path  # the folder it serves
    port: int
    requests: list[str] = field(default_factory=list)  # paths asked for, in order

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def serve(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return self.url(name)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path.startswith("/slow/"):  # a byte every 20 ms, for a minute: stopped long before
                self.send_response(200)
                self.send_header("Content-Length", "3000")
                self.end_headers()
                try:
                    for _ in range(3000):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.02)
                except OSError:  # the client went away
                    pass
                return
            if self.path.startswith("/cut/"):  # announces more bytes than it sends
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"only a little")
                return
            super().do_GET()

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Server(root, httpd.server_address[1], requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may fall back to the real ~/.cache or a user's $RNNLAB_DATA."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(dl.ENV_VAR, raising=False)
    return home


@pytest.fixture
def tiny(server: Server, monkeypatch: pytest.MonkeyPatch) -> dl.Source:
    """A synthetic corpus, served at its own URL."""
    src = dl.Source(name="tiny", url=server.serve("tiny.txt", TINY), sha256=sha(TINY), size=len(TINY),
                    filename="tiny.txt", description="a synthetic test corpus")
    monkeypatch.setitem(dl.CORPORA, "tiny", src)
    return src


@pytest.fixture
def tinyraw(server: Server, monkeypatch: pytest.MonkeyPatch) -> dl.Source:
    """A synthetic corpus with the warpeace post-processing step."""
    src = dl.Source(name="tinyraw", url=server.serve("tinyraw.txt", TINY_RAW), sha256=sha(TINY), size=len(TINY),
                    filename="tinyraw.txt", description="a synthetic raw corpus",
                    postprocess=dl.strip_bom_and_cr, raw_sha256=sha(TINY_RAW), raw_size=len(TINY_RAW))
    monkeypatch.setitem(dl.CORPORA, "tinyraw", src)
    return src


# The registry -----------------------------------------------------------------------


def test_registry_pins_every_source() -> None:
    assert set(dl.CORPORA) >= {"tinyshakespeare", "warpeace"}
    for name, src in dl.CORPORA.items():
        assert src.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", src.sha256)
        assert re.search(r"/[0-9a-f]{40}/", src.url), f"{name}'s URL is not pinned to a commit"
        assert src.url.startswith("https://") and src.size > 0 and src.filename and src.description
        assert (src.postprocess is None) == (src.raw_sha256 is None)


def test_source_needs_raw_checksum_with_postprocess() -> None:
    with pytest.raises(ValueError, match="together"):
        dl.Source("x", "http://x", sha(b""), 0, "x", "x", postprocess=dl.strip_bom_and_cr)


def test_strip_bom_and_cr() -> None:
    assert dl.strip_bom_and_cr(BOM + b"a\rb\r\r") == b"a\nb\n\n"
    assert dl.strip_bom_and_cr(b"a" + BOM + b"b") == b"a" + BOM + b"b"  # only a leading mark is dropped
    assert dl.strip_bom_and_cr(TINY_RAW) == TINY


def test_warpeace_postprocess_reproduces_the_pinned_checksums() -> None:
    needs(WARPEACE)
    final = WARPEACE.read_bytes()
    src = dl.CORPORA["warpeace"]
    assert (sha(final), len(final)) == (src.sha256, src.size)
    raw = BOM + final.replace(b"\n", b"\r")  # the inverse; the shared copy holds no \r of its own
    assert (sha(raw), len(raw)) == (src.raw_sha256, src.raw_size)
    assert src.postprocess is not None and src.postprocess(raw) == final


# The real corpora, served locally ---------------------------------------------------


def test_tinyshakespeare_from_local_server(server: Server, tmp_path: Path) -> None:
    needs(SHAKESPEARE)
    shutil.copyfile(SHAKESPEARE, server.root / "input.txt")
    dest = tmp_path / "data"
    path = dl.download("tinyshakespeare", dest_dir=dest, url=server.url("input.txt"), progress=False)
    assert path == dest / "tinyshakespeare" / "input.txt"
    assert path.read_bytes() == SHAKESPEARE.read_bytes()
    assert files_under(dest) == [path]  # no temporary file left behind
    assert server.requests == ["/input.txt"]


def test_warpeace_from_local_server_is_post_processed(server: Server, tmp_path: Path) -> None:
    needs(WARPEACE)
    final = WARPEACE.read_bytes()
    url = server.serve("warpeace_input.txt", BOM + final.replace(b"\n", b"\r"))
    path = dl.download("warpeace", dest_dir=tmp_path / "data", url=url, progress=False)
    assert path == tmp_path / "data" / "warpeace" / "warpeace_input.txt"
    assert path.read_bytes() == final
    assert dl.file_sha256(path) == dl.CORPORA["warpeace"].sha256


def test_warpeace_already_clean_copy_fails_the_raw_checksum(server: Server, tmp_path: Path) -> None:
    # Cleaning a clean copy gives the right final bytes; only the raw checksum notices the wrong source.
    needs(WARPEACE)
    url = server.serve("clean.txt", WARPEACE.read_bytes())
    with pytest.raises(DownloadError, match="raw download checksum mismatch"):
        dl.download("warpeace", dest_dir=tmp_path / "data", url=url, progress=False)
    assert files_under(tmp_path / "data") == []


# The synthetic corpus: success, reuse, destination -----------------------------------


def test_synthetic_download_and_reuse_without_request(tiny: dl.Source, server: Server, tmp_path: Path) -> None:
    path = dl.download("tiny", dest_dir=tmp_path / "d", progress=False)
    assert path.read_bytes() == TINY and server.requests == ["/tiny.txt"]
    mtime = path.stat().st_mtime_ns
    assert dl.download("tiny", dest_dir=tmp_path / "d", progress=False) == path
    assert server.requests == ["/tiny.txt"]  # the good file was reused: no second request
    assert path.stat().st_mtime_ns == mtime


def test_postprocess_applied_and_raw_checksum_checked(tinyraw: dl.Source, server: Server, tmp_path: Path) -> None:
    path = dl.download("tinyraw", dest_dir=tmp_path / "d", progress=False)
    assert path.read_bytes() == TINY
    url = server.serve("clean.txt", TINY)  # final bytes served where raw ones are expected
    with pytest.raises(DownloadError, match=f"raw download checksum mismatch: expected sha256 {sha(TINY_RAW)}"):
        dl.download("tinyraw", dest_dir=tmp_path / "other", url=url, progress=False)
    assert files_under(tmp_path / "other") == []


def test_rnnlab_data_env_is_honoured(tiny: dl.Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "env"))
    assert dl.download("tiny", progress=False) == tmp_path / "env" / "tiny" / "tiny.txt"
    # an explicit dest_dir wins over the variable
    assert dl.download("tiny", dest_dir=tmp_path / "arg", progress=False) == tmp_path / "arg" / "tiny" / "tiny.txt"
    assert (tmp_path / "arg" / "tiny" / "tiny.txt").read_bytes() == TINY


def test_default_is_the_cache_in_home(tiny: dl.Source, isolated_home: Path) -> None:
    path = dl.download("tiny", progress=False)
    assert path == isolated_home / ".cache" / "rnnlab" / "data" / "tiny" / "tiny.txt"
    assert path.read_bytes() == TINY
    assert dl.corpus_path("tiny") == path


def test_progress_bar_only_when_asked(tiny: dl.Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dl.download("tiny", dest_dir=tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
    dl.download("tiny", dest_dir=tmp_path / "loud", progress=True)
    assert "tiny" in capsys.readouterr().err


# The synthetic corpus: every failure leaves nothing behind --------------------------


def test_checksum_mismatch_is_refused(tiny: dl.Source, server: Server, tmp_path: Path) -> None:
    bad = TINY.replace(b"small", b"large")
    url = server.serve("bad.txt", bad)
    with pytest.raises(DownloadError) as e:
        dl.download("tiny", dest_dir=tmp_path / "d", url=url, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "tiny" in msg and url in msg
    assert f"expected sha256 {tiny.sha256} ({len(TINY):,d} bytes), got {sha(bad)}" in msg
    assert files_under(tmp_path / "d") == []  # neither the final nor the temporary file


def test_existing_bad_file_is_not_overwritten(tiny: dl.Source, server: Server, tmp_path: Path) -> None:
    path = tmp_path / "d" / "tiny" / "tiny.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"my own edits")
    with pytest.raises(DownloadError, match="already exists.*delete it"):
        dl.download("tiny", dest_dir=tmp_path / "d", progress=False)
    assert path.read_bytes() == b"my own edits"
    assert server.requests == []
    assert files_under(tmp_path / "d") == [path]


def test_good_file_survives_a_bad_mirror(tiny: dl.Source, server: Server, tmp_path: Path) -> None:
    path = dl.download("tiny", dest_dir=tmp_path / "d", progress=False)
    url = server.serve("bad.txt", b"not the corpus")
    assert dl.download("tiny", dest_dir=tmp_path / "d", url=url, progress=False) == path
    assert path.read_bytes() == TINY
    assert "/bad.txt" not in server.requests


def test_http_404(tiny: dl.Source, server: Server, tmp_path: Path) -> None:
    url = server.url("missing.txt")
    with pytest.raises(DownloadError, match=f"tiny from {re.escape(url)}: HTTP 404"):
        dl.download("tiny", dest_dir=tmp_path / "d", url=url, progress=False)
    assert files_under(tmp_path / "d") == []
    assert not (tmp_path / "d").exists()  # nor an empty folder: the dataset's, nor the --dir this call made
    (tmp_path / "kept").mkdir()  # a --dir that was there before stays
    with pytest.raises(DownloadError):
        dl.download("tiny", dest_dir=tmp_path / "kept" / "a" / "b", url=url, progress=False)
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []


def test_connection_refused(tiny: dl.Source, tmp_path: Path) -> None:
    with socket.socket() as s:  # bound but not listening: connecting is refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/tiny.txt"
        with pytest.raises(DownloadError, match="(?i)refused") as e:
            dl.download("tiny", dest_dir=tmp_path / "d", url=url, progress=False)
    assert url in str(e.value)
    assert files_under(tmp_path / "d") == []


def test_timeout(tiny: dl.Source, tmp_path: Path) -> None:
    with socket.socket() as s:  # listening but never answering
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/tiny.txt"
        with pytest.raises(DownloadError, match="timed out"):
            dl.download("tiny", dest_dir=tmp_path / "d", url=url, progress=False, timeout=0.3)
    assert files_under(tmp_path / "d") == []


def test_connection_cut_short(tiny: dl.Source, server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="closed after 13 of 100,000 bytes"):
        dl.download("tiny", dest_dir=tmp_path / "d", url=server.url("cut/tiny.txt"), progress=False)
    assert files_under(tmp_path / "d") == []


def test_disk_error(tiny: dl.Source, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(DownloadError, match="cannot create folder"):
        dl.download("tiny", dest_dir=blocker, progress=False)


def test_bad_url(tiny: dl.Source, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="tiny from not a url"):
        dl.download("tiny", dest_dir=tmp_path / "d", url="not a url", progress=False)


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="unknown corpus 'shakespear'; known: .*tinyshakespeare.*warpeace"):
        dl.download("shakespear", dest_dir=tmp_path, progress=False)
    assert files_under(tmp_path) == []


# The CLI --------------------------------------------------------------------------


def test_cli_download(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs(SHAKESPEARE)
    shutil.copyfile(SHAKESPEARE, server.root / "input.txt")
    argv = ["data", "download", "tinyshakespeare", "--dir", str(tmp_path), "--url", server.url("input.txt"), "--quiet"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "tinyshakespeare" / "input.txt")
    assert err == ""
    assert (tmp_path / "tinyshakespeare" / "input.txt").read_bytes() == SHAKESPEARE.read_bytes()


# A child that downloads the synthetic corpus through the command line (argv: the URL, the --dir folder).
CHILD = """
import sys
from rnnlab.cli import main
from rnnlab.data import download as dl
dl.CORPORA["tiny"] = dl.Source(name="tiny", url=sys.argv[1], sha256="0" * 64, size=3000, filename="tiny.txt",
                               description="a synthetic test corpus")
sys.exit(main(["data", "download", "tiny", "--dir", sys.argv[2], "--quiet"]))
"""


def _signals_as_a_shell_gives() -> None:
    """The child starts with SIGINT and SIGTERM at their defaults and unblocked, as a command typed in a shell does:
    a disposition or mask left by the test runner's process (both are inherited through exec) must not decide."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_download_stopped_by_a_signal_leaves_nothing(server: Server, tmp_path: Path, sig: int, status: int) -> None:
    """SIGTERM (kill, a scheduler) cleans up as Ctrl-C does: no .part file, no folder it made."""
    dest = tmp_path / "d" / "deeper"
    p = subprocess.Popen([sys.executable, "-c", CHILD, server.url("slow/tiny.txt"), str(dest)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_signals_as_a_shell_gives)
    deadline = time.monotonic() + 60
    while not [f for f in files_under(dest) if f.name.endswith(".part")] and time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()
        time.sleep(0.02)
    time.sleep(0.1)  # well into the transfer
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == status, err
    assert "Traceback" not in err
    assert files_under(tmp_path / "d") == [] and not (tmp_path / "d").exists()


def test_cli_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "nope", "--dir", str(tmp_path), "--quiet"]) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown corpus 'nope'" in err and "tinyshakespeare" in err


def test_cli_http_error(tiny: dl.Source, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "tiny", "--dir", str(tmp_path), "--url", server.url("gone"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 404" in err and "Traceback" not in err


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^tinyshakespeare\s+1,115,394 bytes", out, re.MULTILINE)
    assert re.search(r"^warpeace\s+3,196,231 bytes", out, re.MULTILINE)


def test_no_torch_import() -> None:
    code = "import sys, rnnlab.data.download; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
