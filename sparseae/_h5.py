"""Self-describing HDF5 files: the root attributes every sparseae file carries.

``format`` (a string naming the kind of file), integer ``format-version``
(separate from the package version), ``generated-by`` and ``created`` (ISO
8601).  Readers refuse another format or a newer version with a one-line
error that says to upgrade.
"""

import datetime as _dt
import os

import numpy as np


def first_line(exc) -> str:
    """The first line of an exception's message (HDF5 messages span several)."""
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def generated_by() -> str:
    from sparseae import __version__

    return f"sparseae {__version__}"


def text(value):
    """An attribute as str when h5py returns bytes."""
    return value.decode() if isinstance(value, bytes) else value


def stamp(f, fmt: str, version: int, created: bool = True) -> None:
    """Write the root attributes of a new (or rewritten) file."""
    f.attrs["format"] = fmt
    f.attrs["format-version"] = np.int64(version)
    f.attrs["generated-by"] = generated_by()
    if created:
        f.attrs["created"] = now()


def check_header(f, path, fmt: str, version: int, error, label: str) -> dict:
    """Validate an open file's root attributes; return them decoded.

    ``error`` is the exception class raised, ``label`` the message prefix
    (``"checkpoint"``, ``"results"``).
    """
    attrs = {k: text(v) for k, v in f.attrs.items()}
    found = attrs.get("format")
    if found != fmt:
        raise error(f"{label}: {path} has format {found!r}, expected {fmt!r}")
    try:
        v = int(attrs.get("format-version", -1))
    except (TypeError, ValueError):
        v = -1
    if v > version:
        raise error(f"{label}: {path} has format-version {v}, newer than the {version} this "
                    "sparseae reads; upgrade sparseae")
    if v < 1:
        raise error(f"{label}: {path} has no valid format-version")
    return attrs


def open_checked(path, fmt: str, version: int, error, label: str):
    """Open ``path`` read-only after checking it exists, is HDF5 and has the
    right header; returns ``(h5py.File, attrs)``."""
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise error(f"{label}: file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise error(f"{label}: {path} is not a readable HDF5 file "
                    f"(truncated or another format: {first_line(exc)})") from None
    try:
        attrs = check_header(f, path, fmt, version, error, label)
        check_plain(f, path, error, label)
    except BaseException:
        f.close()
        raise
    return f, attrs


def check_plain(f, path, error, label: str) -> None:
    """Refuse a file whose content lives elsewhere or whose names point elsewhere.

    Every link must be a hard link (no soft links, external links or user-defined
    links) and no dataset may use external storage or be virtual: an HDF5 file
    can otherwise make a reader load another file's bytes.  Raises ``error`` (one
    line naming the object) on the first offender.
    """
    import h5py

    groups = [f]
    f.visititems(lambda name, obj: groups.append(obj) if isinstance(obj, h5py.Group) else None)
    for g in groups:
        for name in g:
            where = f"{g.name.rstrip('/')}/{name}"
            try:
                link = g.get(name, getlink=True)
            except Exception:  # noqa: BLE001 - user-defined link classes h5py cannot show
                link = None
            if not isinstance(link, h5py.HardLink):
                kind = {h5py.SoftLink: "a soft link", h5py.ExternalLink: "an external link"}.get(
                    type(link), "a link of an unsupported kind")
                raise error(f"{label}: {path} {where} is {kind}; sparseae reads only plain "
                            "HDF5 files (no links, external storage or virtual datasets)")
            obj = g[name]
            if isinstance(obj, h5py.Dataset):
                plist = obj.id.get_create_plist()
                if obj.is_virtual or plist.get_layout() == h5py.h5d.VIRTUAL:
                    kind = "a virtual dataset"
                elif plist.get_external_count() > 0:
                    kind = "a dataset with external storage"
                else:
                    continue
                raise error(f"{label}: {path} {where} is {kind}; sparseae reads only plain "
                            "HDF5 files (no links, external storage or virtual datasets)")
