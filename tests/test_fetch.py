"""Fetching EmoDB, tested against a zip served from a loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import shutil
import threading
import urllib.request
import zipfile
from pathlib import Path

import pytest
from corpus_builders import build_emodb, emodb_names
from typer.testing import CliRunner

from budget.cli import app
from budget.corpora import load_corpus
from budget.corpora.fetch import fetch_corpus
from budget.errors import BudgetError


@pytest.fixture(autouse=True)
def pinned_to(monkeypatch):
    """The archives here are synthetic: pin EmoDB to nothing, or (called) to a given pin list."""
    import dataclasses

    from budget import corpora

    def pin(path):
        monkeypatch.setitem(corpora.CORPORA, "emodb", dataclasses.replace(corpora.CORPORA["emodb"], pinned_files=path))

    original = corpora.CORPORA["emodb"].pinned_files
    pin(None)
    pin.original = original
    return pin


def pin_list(folder: Path, out: Path) -> Path:
    rows = [f"{p.name},{p.stat().st_size},{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in sorted(folder.rglob("*.wav"))]
    out.write_text("# test pins\nname,bytes,sha256\n" + "\n".join(rows) + "\n")
    return out


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
        archive.writestr(prefix + "erklaerung.txt", "documentation shipped beside wav/\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def emodb_source(tmp_path_factory) -> Path:
    """An unpacked EmoDB-like folder: wav/ with 535 EmoDB-named files."""
    return build_emodb(tmp_path_factory.mktemp("emodb_src"), emodb_names(535))


@pytest.fixture(scope="module")
def emodb_zip(emodb_source) -> bytes:
    """A zip laid out like the official download."""
    return zip_folder(emodb_source)


@pytest.fixture(scope="module")
def server(emodb_source, emodb_zip, tmp_path_factory):
    """Serves /<name> from a dict of payloads; /cut/<name> promises more bytes than it sends."""
    payloads = {
        "download.zip": emodb_zip,
        "nested.zip": zip_folder(emodb_source, prefix="emodb/"),
        "not-a-zip.zip": b"<html>moved</html>" * 100,
        "short.zip": zip_folder(build_emodb(tmp_path_factory.mktemp("short"), emodb_names(530))),
    }
    tampered = tmp_path_factory.mktemp("tampered")
    shutil.copytree(emodb_source, tampered, dirs_exist_ok=True)
    victim = sorted((tampered / "wav").glob("*.wav"))[7]
    audio = bytearray(victim.read_bytes())
    audio[-1] ^= 0x01  # one bit of one sample: same size, a valid zip with its own correct CRCs
    victim.write_bytes(bytes(audio))
    payloads["tampered.zip"] = zip_folder(tampered)
    corrupt = bytearray(emodb_zip)
    middle = len(corrupt) // 2
    corrupt[middle : middle + 64] = bytes(64)
    payloads["corrupt.zip"] = bytes(corrupt)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            cut = self.path.startswith("/cut/")
            body = payloads.get(self.path.removeprefix("/cut/").lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3] if cut else body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_checks_and_installs(server, emodb_zip, tmp_path):
    digest = hashlib.sha256(emodb_zip).hexdigest()
    root = fetch_corpus("emodb", dest=tmp_path, url=f"{server}/download.zip", sha256=digest)
    assert root == tmp_path / "emodb"
    assert leftovers(tmp_path) == ["emodb"]
    assert (root / "erklaerung.txt").is_file()
    assert len(load_corpus("emodb", root)) == 535


def test_archive_with_one_top_folder_is_unwrapped(server, tmp_path):
    root = fetch_corpus("emodb", dest=tmp_path, url=f"{server}/nested.zip")
    assert (root / "wav").is_dir()


def test_existing_copy_is_kept_unless_forced(server, tmp_path):
    (tmp_path / "emodb").mkdir()
    assert fetch_corpus("emodb", dest=tmp_path, url=f"{server}/missing.zip") == tmp_path / "emodb"
    with pytest.raises(BudgetError, match="404"):
        fetch_corpus("emodb", dest=tmp_path, url=f"{server}/missing.zip", force=True)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/cut/download.zip", "cut short|failed after"),
        ("/corrupt.zip", "corrupt"),
        ("/not-a-zip.zip", "not a zip"),
        ("/short.zip", "holds 530 utterances, expected 535"),
    ],
)
def test_bad_downloads_leave_nothing_behind(server, tmp_path, path, message):
    with pytest.raises(BudgetError, match=message):
        fetch_corpus("emodb", dest=tmp_path, url=server + path)
    assert leftovers(tmp_path) == []


def test_wrong_checksum_is_refused(server, tmp_path):
    with pytest.raises(BudgetError, match="expected 00"):
        fetch_corpus("emodb", dest=tmp_path, url=f"{server}/download.zip", sha256="00" * 32)
    assert leftovers(tmp_path) == []


def test_leftovers_of_a_killed_run_are_cleared(server, tmp_path):
    (tmp_path / ".emodb.x1.partial").mkdir()
    (tmp_path / ".emodb.x1.partial" / "download.zip").write_bytes(b"half")
    fetch_corpus("emodb", dest=tmp_path, url=f"{server}/download.zip")
    assert leftovers(tmp_path) == ["emodb"]


def test_restricted_corpora_are_never_fetched(tmp_path):
    with pytest.raises(BudgetError, match="not free to redistribute"):
        fetch_corpus("iemocap", dest=tmp_path)


def test_ensure_corpus_fetches_only_when_missing(server, isolated_data_dir, monkeypatch):
    import dataclasses

    from budget import corpora
    from budget.corpora.fetch import ensure_corpus

    adapter = dataclasses.replace(corpora.CORPORA["emodb"], url=f"{server}/download.zip")
    monkeypatch.setitem(corpora.CORPORA, "emodb", adapter)
    said = []
    assert ensure_corpus("emodb", log=said.append) == (isolated_data_dir / "emodb").resolve()
    assert len(said) == 1 and "fetching it" in said[0]
    assert ensure_corpus("emodb", log=said.append) == (isolated_data_dir / "emodb").resolve()
    assert len(said) == 1  # present now: no second download


def test_an_archive_that_differs_from_the_pinned_files_is_refused(server, emodb_source, tmp_path, pinned_to):
    pins = pin_list(emodb_source, tmp_path / "pins.csv")
    pinned_to(str(pins))
    assert fetch_corpus("emodb", dest=tmp_path / "ok", url=f"{server}/download.zip") == tmp_path / "ok" / "emodb"
    result = CliRunner().invoke(app, ["corpus", "fetch", "emodb", "--dest", str(tmp_path / "bad"), "--url", f"{server}/tampered.zip"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert re.match(r"error: emodb: the archive is not the published corpus \(1 file\(s\) differ; first: \w+\.wav: \d+ "
                    r"bytes, SHA-256 .*; not installed", lines[0]), lines[0]  # fmt: skip
    assert leftovers(tmp_path / "bad") == []


def test_the_official_address_is_fetched_over_https_and_over_http_only_where_https_cannot_connect(
    server, tmp_path, monkeypatch, capsys
):  # fmt: skip
    import dataclasses

    from budget import corpora

    requested = []
    real_open = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, **kw: requested.append(url) or real_open(url, **kw))
    plain_only = server.replace("http://", "https://") + "/download.zip"  # the loopback server speaks no TLS
    monkeypatch.setitem(corpora.CORPORA, "emodb", dataclasses.replace(corpora.CORPORA["emodb"], url=plain_only))
    assert fetch_corpus("emodb", dest=tmp_path) == tmp_path / "emodb"
    assert requested == [plain_only, server + "/download.zip"]
    assert "downloading over http instead" in capsys.readouterr().err
    requested.clear()
    with pytest.raises(BudgetError, match="404"):  # a mirror's address is fetched as given, never rewritten
        fetch_corpus("emodb", dest=tmp_path / "again", url=f"{server}/gone.zip")
    assert requested == [f"{server}/gone.zip"]


def test_the_shipped_pins_match_the_real_emodb(shared_emodb, pinned_to):
    from budget.corpora.fetch import _check_pinned

    pins = Path(fetch_corpus.__code__.co_filename).parent / pinned_to.original
    assert len(pins.read_text().splitlines()) == 2 + 1 + 535
    _check_pinned("emodb", shared_emodb, pins)  # raises on any difference
