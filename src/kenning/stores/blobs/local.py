"""Local-folder blob store: ``root/ab/cd/<sha256>``, written atomically and fsynced."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from kenning.stores.blobs.protocol import is_key, validate_key

try:
    import fcntl
except ImportError:  # not POSIX: temp files are swept by age alone
    fcntl = None  # type: ignore[assignment]

_CHUNK = 1 << 20


class LocalBlobStore:
    """A :class:`~kenning.stores.blobs.protocol.BlobStore` on the local filesystem.

    Blobs live at ``root/<k[0:2]>/<k[2:4]>/<k>``. A write goes to a temporary file under
    ``root/.tmp`` (same filesystem), is fsynced, then renamed into place with
    ``os.replace`` and the parent folder fsynced, so a crash never leaves a partial blob
    under a valid key. Concurrent writers of the same content race harmlessly: both
    renames install identical bytes.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """Filesystem path of ``key`` (validated; the file may not exist)."""
        validate_key(key)
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        """Store ``data``; return its sha256 hex key. Re-putting known bytes is a no-op."""
        return self.put_many([data])[0]

    def put_many(self, datas: Sequence[bytes]) -> list[str]:
        """Store every item; return the keys in order. Flushes to disk are grouped.

        Every new blob is written to its temporary file first; then each file is fsynced
        (the first fsync commits the filesystem's journal with the data of all of them,
        so the rest find little left to write), renamed into place as in :meth:`put`, and
        the folders that gained a name are fsynced once each, after the last rename and
        before the keys are returned. The durability promise does not change: no key is
        returned before its bytes and its name are on disk.
        """
        keys = [hashlib.sha256(data).hexdigest() for data in datas]
        seen: set[str] = set()
        with contextlib.ExitStack() as stack:
            written: list[tuple[BinaryIO, Path, str]] = []
            for key, data in zip(keys, datas, strict=True):
                if key in seen or self._touch(key):
                    seen.add(key)
                    continue
                seen.add(key)
                fh, tmp = stack.enter_context(self._temp_file())
                fh.write(data)
                fh.flush()
                written.append((fh, tmp, key))
            for fh, _, _ in written:
                os.fsync(fh.fileno())
            folders: set[Path] = set()
            for fh, tmp, key in written:
                folders |= self._install(fh, tmp, key, synced=True)
            _fsync_dirs(folders)
        return keys

    def put_file(self, path: Path) -> str:
        """Stream ``path`` into the store, hashing while copying; return the key."""
        digest = hashlib.sha256()
        with self._temp_file() as (fh, tmp):
            with open(path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
            key = digest.hexdigest()
            if not self._touch(key):
                _fsync_dirs(self._install(fh, tmp, key))
        return key

    def get(self, key: str) -> bytes:
        """Return the stored bytes; ``KeyError`` if absent."""
        with self.open(key) as fh:
            return fh.read()

    def open(self, key: str) -> BinaryIO:
        """Open the blob for reading; ``KeyError`` if absent."""
        path = self.path_for(key)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        return self.path_for(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was there."""
        try:
            self.path_for(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        """Size in bytes; ``KeyError`` if absent."""
        try:
            return self.path_for(key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def scan(self, older_than: float) -> Iterator[str]:
        """Keys whose file was last put before ``older_than`` (POSIX seconds)."""
        for first in self.root.iterdir():
            if first == self._tmp or not first.is_dir():
                continue
            for path in first.glob("*/*"):
                try:
                    old = path.stat().st_mtime < older_than
                except FileNotFoundError:
                    continue  # deleted while we looked
                if old and is_key(path.name):
                    yield path.name

    def sweep_temp(self, older_than: float) -> int:
        """Remove temporary files of writes that never finished (a crash mid-put).

        A write in progress holds an exclusive ``flock`` on its temporary file (released
        by the kernel when its process dies), so only abandoned files are removed, whatever
        ``older_than`` says.
        """
        removed = 0
        for path in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than and _remove_if_abandoned(path):
                    removed += 1
        return removed

    def _touch(self, key: str) -> bool:
        """Refresh the age of stored bytes; ``False`` if they are not stored."""
        try:
            os.utime(self.path_for(key))
        except FileNotFoundError:
            return False
        return True

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[BinaryIO, Path]]:
        while True:
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
            tmp = Path(name)
            if fcntl is None:
                break
            fcntl.flock(fd, fcntl.LOCK_EX)  # "in progress" for sweep_temp
            # Between mkstemp and flock a sweep may have taken the file for abandoned and
            # unlinked it (a sweep unlinks only while it holds the lock): start again.
            if os.fstat(fd).st_nlink > 0:
                break
            os.close(fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh, tmp
        finally:
            # After a successful install the temp name is gone; otherwise clean it up.
            tmp.unlink(missing_ok=True)

    def _install(self, fh: BinaryIO, tmp: Path, key: str, *, synced: bool = False) -> set[Path]:
        """Make the temporary file durable (unless the caller has: ``synced``) and move
        it to ``key``'s path; return the folders to fsync before the name counts as
        stored (the caller groups them)."""
        if not synced:
            fh.flush()
            os.fsync(fh.fileno())
        final = self.path_for(key)
        folders = {final.parent}
        if not final.parent.is_dir():
            # New fan-out folders are names in their parents: those must last too.
            folders |= {final.parent.parent, self.root}
            final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        return folders


def _remove_if_abandoned(path: Path) -> bool:
    """Unlink the temporary file unless a live writer holds it; whether it was removed.

    The file is unlinked while this sweep holds its lock, so a writer that locks it right
    after ``mkstemp`` either gets the lock first (and the sweep leaves the file alone) or
    gets it after the unlink and sees the file has no name any more (and starts again).
    """
    if fcntl is None:
        path.unlink()
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            return False  # the name now points at another file
        path.unlink()
        return True
    finally:
        os.close(fd)


def _fsync_dirs(folders: set[Path]) -> None:
    """Each folder once, deepest first (a blob's name, then new fan-out folders' names)."""
    for folder in sorted(folders, reverse=True):
        _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the folder that holds the new name (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
