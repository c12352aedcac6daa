"""Atomic, symlink-proof file I/O relative to directory file descriptors.

DESIGN rule 4: never write through a symlink; never touch the data file. Every path is
walked from ``/`` one component at a time with ``O_NOFOLLOW``, and every file is created
or opened relative to the file descriptor of its directory, so a symlink planted anywhere
on the way is refused instead of followed. Writes go to an ``O_EXCL`` temp file that is
fsynced and then renamed (or hard-linked) into place, so readers and backup tools see the
old bytes or the new bytes, never half a file (reference §5.3 "Writing a sidecar").

Paths given here must be canonical (no symlink anywhere, no ``..``): resolve configured
roots once, when the configuration is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from stampd.store.errors import FileAccessError, SidecarExistsError, UnsafePathError

# O_NOFOLLOW on every component (rule 4); O_CLOEXEC so no fd leaks into a child process.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_EXCL: the temp name must be new, so a symlink or file planted there fails the open
# instead of being followed or reused (reference §5.3 step 2).
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted at the name must not hang the reader (reference §3.3).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Linux NAME_MAX in bytes (ext4, xfs, btrfs, tmpfs); temp names are shortened to fit.
_NAME_MAX = 255
# link(2) fails with these where the filesystem has no hard links (vfat, exfat, some FUSE).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})

_HINTS = {
    errno.ENOSPC: "the filesystem is full; free space and stampd will retry",
    errno.EDQUOT: "the disk quota is exhausted; raise it or free space and stampd will retry",
    errno.EROFS: 'the filesystem is read-only; use sidecars = "mirror" for this watch',
    errno.EACCES: 'give the stampd user write access to the directory, or use sidecars = "mirror"',
    errno.EPERM: 'give the stampd user write access to the directory, or use sidecars = "mirror"',
    errno.EIO: "the storage reported an I/O error; check the kernel log (journalctl -k)",
    errno.ENAMETOOLONG: "the name is too long for this filesystem; shorten the data file's name",
}
_SYMLINK_HINT = (
    "stampd never follows symlinks (DESIGN rule 4); configure the real path (realpath) instead"
)


def open_directory(path: Path, *, create: bool = False, mode: int = 0o755) -> int:
    """Open the absolute directory ``path`` without following any symlink; return its fd.

    The path is walked from ``/`` with ``openat(O_DIRECTORY|O_NOFOLLOW)`` per component, so
    no component can be a symlink (DESIGN rule 4): one raises :class:`UnsafePathError`
    naming it. With ``create=True`` missing components are created with ``mode``. The
    caller closes the returned fd (or uses :func:`directory`).
    """
    try:
        return _walk(path, create=create, mode=mode)
    except FileNotFoundError as exc:
        raise FileAccessError(
            f"cannot open directory {path}: it does not exist",
            hint="check that the path exists and was not removed",
        ) from exc


@contextlib.contextmanager
def directory(path: Path, *, create: bool = False) -> Iterator[int]:
    """Context manager around :func:`open_directory` that closes the fd on exit."""
    fd = open_directory(path, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


class DirectorySyncs:
    """Directory fsyncs put off, so that many renames into one directory share one fsync.

    ``write_atomic(..., syncs=syncs)`` fsyncs the file and renames it into place, and leaves
    the fsync of the directory to :meth:`sync`. Until that has returned, the new names are
    not durable (DESIGN rule 1): the caller counts nothing as written before. The
    directories are held open (the same directory, even if renamed meanwhile), at most
    ``limit`` of them; one more is synced at once instead.
    """

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._held: dict[tuple[int, int], int] = {}

    def add(self, dir_fd: int) -> None:
        """Sync ``dir_fd``'s directory at :meth:`sync` (once, however many renames)."""
        try:
            st = os.fstat(dir_fd)
            key = (st.st_dev, st.st_ino)
            if key in self._held:
                return
            if len(self._held) >= self._limit:
                os.fsync(dir_fd)
                return
            self._held[key] = os.dup(dir_fd)
        except OSError as exc:
            raise _access_error("cannot sync the directory", _where(dir_fd, "."), exc) from exc

    def sync(self) -> None:
        """fsync every directory added since the last call, once each; raises
        :class:`FileAccessError` for the first that fails (after trying them all)."""
        held, self._held = self._held, {}
        failure: FileAccessError | None = None
        for fd in held.values():
            try:
                os.fsync(fd)
            except OSError as exc:
                where = _where(fd, ".")
                failure = failure or _access_error("cannot sync the directory", where, exc)
            finally:
                os.close(fd)
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Forget the directories without syncing them (their writes do not count)."""
        held, self._held = self._held, {}
        for fd in held.values():
            os.close(fd)


def write_atomic(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o644,
    replace: bool = True,
    syncs: DirectorySyncs | None = None,
) -> None:
    """Atomically publish ``data`` as ``name`` in the directory ``dir_fd``.

    Follows reference §5.3: an ``O_CREAT|O_EXCL|O_NOFOLLOW`` temp file next to the target,
    every byte written, the mode set explicitly, fsync, then rename (``replace=True``) or
    hard link (``replace=False``, which raises :class:`SidecarExistsError` if ``name``
    exists), then fsync of the directory so the new entry survives a crash (DESIGN rule 1) —
    or, with ``syncs``, the directory is left to :meth:`DirectorySyncs.sync`.
    A symlink or non-regular file at ``name`` or at the temp name raises
    :class:`UnsafePathError`. On any failure the temp file is removed and ``name`` keeps
    its previous content.
    """
    _check_name(name)
    tmp = _temp_name(name)
    try:
        fd = os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    except FileExistsError as exc:
        # Something is planted at our fresh random name: never follow it, never retry onto
        # it (rule 4). It is not ours, so it is left where it is.
        raise UnsafePathError(
            f"refusing to write {_where(dir_fd, name)}: "
            f"temp name {tmp} already exists (symlink or file planted)",
            hint="remove the unexpected entry; stampd never writes through existing paths",
        ) from exc
    except OSError as exc:
        raise _access_error("cannot write", _where(dir_fd, name), exc) from exc
    try:
        try:
            _write_all(fd, data)
            # mkstemp and the umask must not decide the sidecar's mode (reference §5.3 step 3);
            # this is our own temp file, never the data file (rule 4).
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        _check_target(dir_fd, name)
        if replace:
            # rename() replaces a directory entry; it never writes through what was there.
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            _publish_new(dir_fd, tmp, name)
    except OSError as exc:
        _discard(dir_fd, tmp)
        raise _access_error("cannot write", _where(dir_fd, name), exc) from exc
    except BaseException:
        # Also on KeyboardInterrupt: a half-done write must not leave a temp file behind.
        _discard(dir_fd, tmp)
        raise
    if syncs is not None:
        syncs.add(dir_fd)  # one fsync later for every rename into this directory
        return
    try:
        # The rename is durable only once the directory is on disk (DESIGN rule 1).
        os.fsync(dir_fd)
    except OSError as exc:
        raise _access_error("cannot sync the directory of", _where(dir_fd, name), exc) from exc


def read_file(dir_fd: int, name: str, *, max_bytes: int) -> bytes:
    """Read the regular file ``name`` in ``dir_fd`` without following a symlink.

    Raises :class:`UnsafePathError` for a symlink or a non-regular file and
    :class:`FileAccessError` when it is missing, unreadable or larger than ``max_bytes``.
    """
    try:
        return _read(dir_fd, name, max_bytes=max_bytes)
    except FileNotFoundError as exc:
        raise FileAccessError(
            f"cannot read {_where(dir_fd, name)}: it does not exist",
            hint="check that the file exists and was not removed",
        ) from exc


def read_path(path: Path, *, max_bytes: int) -> bytes | None:
    """Read the regular file at the absolute ``path`` like :func:`read_file`.

    Returns None when the file or one of its directories does not exist; every other
    problem (symlink on the way, not a regular file, too large, unreadable) raises.
    """
    try:
        dir_fd = _walk(path.parent, create=False, mode=0o755)
    except FileNotFoundError:
        return None
    try:
        return _read(dir_fd, path.name, max_bytes=max_bytes)
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)


def remove_if_holds(path: Path, data: bytes) -> bool:
    """Remove the regular file at ``path`` if it holds exactly ``data``; return whether it did.

    For sidecars whose bytes are safe elsewhere (the archive): the file is renamed to a temp
    name first and checked there, so a file someone wrote at ``path`` in the meantime is put
    back rather than removed. Walked without following symlinks (DESIGN rule 4); the removal
    is made durable with an fsync of the directory.
    """
    try:
        dir_fd = _walk(path.parent, create=False, mode=0o755)
    except FileNotFoundError:
        return False
    try:
        tmp = _temp_name(path.name)
        try:
            os.rename(path.name, tmp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _access_error("cannot remove", _where(dir_fd, path.name), exc) from exc
        try:
            held = _read(dir_fd, tmp, max_bytes=len(data))
        except (FileAccessError, UnsafePathError):
            held = None
        if held != data:
            # Not what we meant to remove: put it back where it was, unless a new file
            # took the name meanwhile (then both stay, the other under the temp name).
            with contextlib.suppress(OSError):
                _publish_new(dir_fd, tmp, path.name)
            return False
        os.unlink(tmp, dir_fd=dir_fd)
        os.fsync(dir_fd)
        return True
    finally:
        os.close(dir_fd)


def _temp_token() -> str:
    """Random part of temp names; unguessable so nobody can plant a file there in advance."""
    return secrets.token_hex(8)


def _temp_name(name: str) -> str:
    """``.{name}.stampd-{token}.tmp``, with ``name`` shortened to fit NAME_MAX.

    Hidden and in the same directory, so the rename stays on one filesystem (atomic) and
    the watcher recognises it (``sidecar.is_ours``). A data file with a long name must still
    get its sidecar, so the name part is cut rather than failing with ENAMETOOLONG.
    """
    suffix = f".stampd-{_temp_token()}.tmp"
    room = _NAME_MAX - 1 - len(suffix)
    # Cut bytes, not characters: NAME_MAX counts bytes. fsdecode keeps a cut UTF-8
    # sequence as surrogate escapes, which encode back to the same bytes.
    return "." + os.fsdecode(os.fsencode(name)[:room]) + suffix


def _check_name(name: str) -> None:
    """Refuse names that would leave ``dir_fd`` (a ``/`` makes openat walk a path, rule 4)."""
    if name in {"", ".", ".."} or "/" in name or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")


def _walk(path: Path, *, create: bool, mode: int) -> int:
    """Open ``path`` component by component from ``/`` (rule 4); raw FileNotFoundError if absent."""
    if not path.is_absolute():
        raise ValueError(f"directory path must be absolute: {path}")
    if ".." in path.parts:
        # '..' could climb out of a directory we checked; canonical paths have none.
        raise ValueError(f"directory path must not contain '..': {path}")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for depth in range(2, len(path.parts) + 1):
            child = _open_child(fd, Path(*path.parts[:depth]), create=create, mode=mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(parent_fd: int, here: Path, *, create: bool, mode: int) -> int:
    """Open (and with ``create`` make) the last component of ``here`` below ``parent_fd``."""
    try:
        return os.open(here.name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        raise _component_error(parent_fd, here, exc) from exc
    try:
        os.mkdir(here.name, mode, dir_fd=parent_fd)
        created = True
    except FileExistsError:
        # Lost a race with another creator: fine, the open below still refuses a symlink.
        created = False
    except OSError as exc:
        raise _access_error("cannot create directory", str(here), exc) from exc
    try:
        child = os.open(here.name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise _component_error(parent_fd, here, exc) from exc
    if created:
        try:
            # The umask must not decide who can read the mirror and the archive; and the new
            # entry must reach the disk before files inside it count as durable (rule 1).
            os.fchmod(child, mode)
            os.fsync(parent_fd)
        except OSError as exc:
            os.close(child)
            raise _access_error("cannot create directory", str(here), exc) from exc
    return child


def _component_error(parent_fd: int, here: Path, exc: OSError) -> Exception:
    """Map a failed component open: a symlink or non-directory is unsafe (rule 4)."""
    if exc.errno not in {errno.ENOTDIR, errno.ELOOP}:
        return _access_error("cannot open directory", str(here), exc)
    try:
        is_link = stat.S_ISLNK(os.stat(here.name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = exc.errno == errno.ELOOP
    if is_link:
        return UnsafePathError(f"{here} is a symlink; refusing to follow it", hint=_SYMLINK_HINT)
    return UnsafePathError(f"{here} is not a directory", hint="check the configured path")


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked; a short sidecar would be a broken proof."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _check_target(dir_fd: int, name: str) -> None:
    """Refuse to replace a symlink or a non-regular file at ``name`` (rule 4, reference §5.3).

    rename() would replace a planted symlink rather than follow it, but an entry that is
    not a plain file is not a sidecar stampd wrote, so it is left alone and reported.
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            f"refusing to write {_where(dir_fd, name)}: it is a symlink",
            hint="remove the symlink; stampd never writes through or over one (DESIGN rule 4)",
        )
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(
            f"refusing to write {_where(dir_fd, name)}: it exists and is not a regular file",
            hint="move the entry aside so stampd can write its proof there",
        )


def _publish_new(dir_fd: int, tmp: str, name: str) -> None:
    """Give ``tmp`` the name ``name`` only if ``name`` does not exist yet.

    link(2) fails with EEXIST instead of replacing, so "no overwrite" is atomic, unlike an
    exists-check followed by rename (which `ots stamp`'s open(…, 'xb') also avoids).
    """
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError as exc:
        raise _exists_error(dir_fd, name) from exc
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links on this filesystem: check, then rename. Not atomic, but stampd is
        # the only writer of its sidecars, so the window only matters against other tools.
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        raise _exists_error(dir_fd, name) from exc
    os.unlink(tmp, dir_fd=dir_fd)


def _exists_error(dir_fd: int, name: str) -> SidecarExistsError:
    return SidecarExistsError(
        f"{_where(dir_fd, name)} already exists; not replacing it",
        hint="stampd verifies and adopts an existing sidecar instead of overwriting it",
    )


def _discard(dir_fd: int, tmp: str) -> None:
    """Remove our temp file after a failure; a leftover would clutter the user's tree."""
    with contextlib.suppress(OSError):
        os.unlink(tmp, dir_fd=dir_fd)


def _read(dir_fd: int, name: str, *, max_bytes: int) -> bytes:
    """Read ``name`` (rule 4: no symlink, regular file only); raw FileNotFoundError if absent."""
    _check_name(name)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(
                f"refusing to read {_where(dir_fd, name)}: it is a symlink", hint=_SYMLINK_HINT
            ) from exc
        raise _access_error("cannot read", _where(dir_fd, name), exc) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(
                f"refusing to read {_where(dir_fd, name)}: it is not a regular file",
                hint="move the entry aside",
            )
        if st.st_size > max_bytes:
            raise _too_large(dir_fd, name, max_bytes)
        chunks: list[bytes] = []
        remaining = max_bytes + 1  # one byte more than allowed reveals a file that grew
        while chunk := os.read(fd, min(remaining, 1 << 20)):
            chunks.append(chunk)
            remaining -= len(chunk)
            if remaining <= 0:
                raise _too_large(dir_fd, name, max_bytes)
        return b"".join(chunks)
    except OSError as exc:
        raise _access_error("cannot read", _where(dir_fd, name), exc) from exc
    finally:
        os.close(fd)


def _too_large(dir_fd: int, name: str, max_bytes: int) -> FileAccessError:
    return FileAccessError(
        f"refusing to read {_where(dir_fd, name)}: larger than the {max_bytes}-byte limit",
        hint="this is not a proof stampd wrote; move it aside",
    )


def _access_error(action: str, where: str, exc: OSError) -> FileAccessError:
    """An OSError as a user-facing error: what failed, where, and what to do (DESIGN §12)."""
    hint = _HINTS.get(exc.errno) if exc.errno is not None else None
    return FileAccessError(f"{action} {where}: {exc.strerror or exc}", hint=hint)


def _where(dir_fd: int, name: str) -> str:
    """The full path of ``name`` for messages, via /proc (Linux only, see DESIGN)."""
    try:
        return str(Path(f"/proc/self/fd/{dir_fd}").readlink() / name)
    except OSError:
        return name
