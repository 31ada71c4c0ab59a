"""Download a freely redistributable corpus, check it, and unpack it atomically.

Only corpora whose authors publish a free download have a URL (EmoDB).
IEMOCAP, RAVDESS and CREMA-D come under licences that need the user's own
agreement, so the toolkit never fetches them.

The archive is fetched over https, or over http where the host does not
answer https, streamed to a hidden temporary file beside the target; its size
and every member's CRC are checked, it is unpacked into a hidden temporary
folder, and every audio file must be the published corpus's: names, sizes and
SHA-256s are pinned beside this module and checked on every fetch, so neither
the transport nor a mirror can change what a study reads.  The adapter must
read the expected utterances and every audio file must open; only then is the
folder renamed into place.  An interrupted, corrupt or tampered download
therefore leaves nothing that looks like a corpus, and leftovers of a killed
run are removed by the next one.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import pandas as pd

from budget import files
from budget.audio import scan_audio
from budget.corpora import data_dir, find_root, get_adapter, load_corpus
from budget.errors import BudgetError
from budget.progress import byte_progress, note

_CHUNK = 1 << 16


def fetch_corpus(
    name: str,
    dest: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Fetch corpus ``name`` into ``dest`` (default: the data folder) and return its root.

    ``url`` overrides the official address (a mirror); ``sha256``, when given,
    must match the downloaded archive (the audio files are checked against
    their pins whatever the address).  An existing copy is kept unless ``force``.
    """
    adapter = get_adapter(name)
    source = url or adapter.url
    if source is None:
        raise BudgetError(
            f"{adapter.name} is not free to redistribute, so budget never downloads it: "
            f"get it from its authors and pass --root PATH"
        )
    parent = Path(dest).expanduser() if dest is not None else data_dir()
    target = parent / adapter.name
    if target.exists() and not force:
        return target
    files.make_folder(parent)
    for leftover in parent.glob(f".{adapter.name}.*.partial*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    with tempfile.TemporaryDirectory(prefix=f".{adapter.name}.", suffix=".partial", dir=parent) as work:
        archive = Path(work) / "download.zip"
        digest = _download_secure_first(source, archive, timeout) if url is None else _download(source, archive, timeout)
        if sha256 is not None and digest != sha256.lower():
            raise BudgetError(f"{adapter.name}: downloaded archive has sha256 {digest}, expected {sha256.lower()}")
        unpacked = Path(work) / "unpacked"
        _unpack(archive, unpacked)
        root = _corpus_root(unpacked)
        manifest = adapter.read(root)
        if adapter.pinned_files is not None:
            _check_pinned(adapter.name, root, Path(__file__).parent / adapter.pinned_files)
        if adapter.expected_utterances is not None and len(manifest) != adapter.expected_utterances:
            raise BudgetError(
                f"{adapter.name}: the archive holds {len(manifest)} utterances, "
                f"expected {adapter.expected_utterances}; not installed"
            )
        scan = scan_audio(manifest)
        if not scan.problems.empty:
            first = scan.problems.iloc[0]
            raise BudgetError(
                f"{adapter.name}: {len(scan.problems)} audio file(s) in the archive are bad "
                f"(first: {Path(first.path).name}: {first.reason}); not installed"
            )
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    return target


def _download_secure_first(url: str, archive: Path, timeout: float) -> str:
    """The official address over https; over plain http only when no https connection can be made."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https"):
        return _download(url, archive, timeout)
    secure = "https://" + rest
    try:
        return _download(secure, archive, timeout, connect_errors=True)
    except _NoConnection as error:
        note(f"{secure}: {error.reason}; downloading over http instead (every file is checked against its pinned SHA-256)")
    return _download("http://" + rest, archive, timeout)


class _NoConnection(Exception):
    """No connection could be made (refused, no TLS, a certificate refused): nothing was received."""

    def __init__(self, reason):
        super().__init__(str(reason))
        self.reason = reason


def _download(url: str, archive: Path, timeout: float, connect_errors: bool = False) -> str:
    """Stream ``url`` into ``archive``; return its sha256.  A short read is an error."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as out:
            expected = int(response.headers.get("Content-Length") or 0) or None
            with byte_progress() as bar:
                task = bar.add_task(f"downloading {url}", total=expected)
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(task, advance=len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        if connect_errors and received == 0 and not isinstance(error, urllib.error.HTTPError):
            raise _NoConnection(getattr(error, "reason", error)) from error
        raise BudgetError(f"download of {url} failed after {received} bytes: {error}") from error
    if expected is not None and received != expected:
        raise BudgetError(f"download of {url} was cut short: {received} of {expected} bytes")
    return digest.hexdigest()


def _unpack(archive: Path, folder: Path) -> None:
    """Unpack a zip after checking that it is one, that its CRCs hold and that no member escapes."""
    if not zipfile.is_zipfile(archive):
        raise BudgetError("the downloaded file is not a zip archive")
    try:
        with zipfile.ZipFile(archive) as zipped:
            bad = zipped.testzip()
            if bad is not None:
                raise BudgetError(f"the downloaded archive is corrupt (CRC error in {bad})")
            for member in zipped.namelist():
                parts = PurePosixPath(member).parts
                if member.startswith("/") or ".." in parts:
                    raise BudgetError(f"the downloaded archive has an unsafe member path: {member}")
            zipped.extractall(folder)
    except (zipfile.BadZipFile, zlib.error, OSError) as error:
        raise BudgetError(f"the downloaded archive is corrupt ({error})") from error


def _check_pinned(name: str, root: Path, pins: Path) -> None:
    """Every audio file the pin list names, with its size and SHA-256, and no other: a tampered or different archive is refused."""
    expected = pd.read_csv(pins, comment="#", dtype={"name": str, "bytes": "int64", "sha256": str}).set_index("name")
    suffixes = {Path(n).suffix.lower() for n in expected.index}
    found = {p.name: p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()}
    problems = [f"{n}: missing" for n in expected.index if n not in found]
    problems += [f"{n}: not in the published corpus" for n in sorted(set(found) - set(expected.index))]
    for file_name, path in sorted(found.items()):
        if file_name in expected.index:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            size, published = expected.loc[file_name, "bytes"], expected.loc[file_name, "sha256"]
            if len(data) != size or digest != published:
                problems.append(f"{file_name}: {len(data)} bytes, SHA-256 {digest[:12]}...; published: {size} bytes, "
                                f"{published[:12]}...")  # fmt: skip
    if problems:
        raise BudgetError(f"{name}: the archive is not the published corpus ({len(problems)} file(s) differ; first: "
                          f"{problems[0]}); not installed")  # fmt: skip


def _corpus_root(unpacked: Path) -> Path:
    """The unpacked folder, or its only subfolder when the archive wraps everything in one."""
    entries = [p for p in unpacked.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name != "wav":
        return entries[0]
    return unpacked


def ensure_corpus(name: str, root: str | Path | None = None, log=print) -> Path:
    """The corpus root; a freely downloadable corpus missing from the data folder is fetched first."""
    adapter = get_adapter(name)
    if root is None and adapter.url is not None and not (data_dir() / adapter.name).exists():
        log(f"{adapter.name} is not in {data_dir()}; fetching it from {adapter.url}")
        fetch_corpus(adapter.name)
    return find_root(adapter.name, root)


def load_fetching(name: str, root: str | Path | None = None, classes: str | None = None, log=print) -> pd.DataFrame:
    """The corpus's manifest (:func:`budget.corpora.load_corpus`), fetching a freely downloadable one when missing."""
    return load_corpus(name, ensure_corpus(name, root, log), classes)
