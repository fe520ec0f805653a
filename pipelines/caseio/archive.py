"""Safe extraction of an uploaded .zip (a DICOM series as clinicians export it).

Refused before anything is written: absolute paths, ``..`` components, symbolic links, too many members, and a
declared total size above ``io.max_zip_ratio`` × the archive's size or above ``io.max_file_bytes``. While
extracting, each member is also cut off at its declared size, so a header that lies about sizes cannot expand
further. A corrupt archive raises `UnreadableFileError`. On any error the partial output folder is removed.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from models.errors import UnreadableFileError, UnsafeArchiveError
from pipelines.config import IOConfig

__all__ = ["check_zip_members", "extract_zip"]

_CHUNK = 1 << 20


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "climbs out of the target folder with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def check_zip_members(archive: zipfile.ZipFile, archive_bytes: int, config: IOConfig, name: str) -> None:
    """Refuse unsafe member names, too many members, or an extreme declared expansion. Reads no member data."""
    infos = archive.infolist()
    if len(infos) > config.max_zip_members:
        raise UnsafeArchiveError(
            f"{name} holds {len(infos):,} members, more than the limit of {config.max_zip_members:,} "
            f"(io.max_zip_members). Upload one series per archive.")
    for info in infos:
        reason = _unsafe_reason(info)
        if reason:
            raise UnsafeArchiveError(f"{name}: entry {info.filename!r} {reason}; the archive is refused. "
                                     f"Re-create it with relative paths inside one folder.")
    total = sum(info.file_size for info in infos)
    limit = min(config.max_zip_ratio * max(archive_bytes, 1), config.max_file_bytes)
    if total > limit:
        raise UnsafeArchiveError(
            f"{name} would expand from {archive_bytes:,} bytes to {total:,} bytes "
            f"({total / max(archive_bytes, 1):.0f}x), over the limit of {limit:,.0f} bytes (io.max_zip_ratio = {config.max_zip_ratio:g}, io.max_file_bytes"
            f" = {config.max_file_bytes:,}). Upload the series uncompressed or as a folder.")


def extract_zip(path: str | os.PathLike, dest: str | os.PathLike, config: IOConfig | None = None) -> Path:
    """Extract the archive at ``path`` into the new folder ``dest`` (which must not exist) and return ``dest``."""
    config = config or IOConfig()
    path, dest = Path(path), Path(dest)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UnreadableFileError(f"{path.name} is not a readable .zip archive ({e}). Re-create the archive.") from e
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with archive:
            check_zip_members(archive, path.stat().st_size, config, path.name)
            for info in archive.infolist():
                if info.is_dir():
                    continue
                target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(archive, info, target, path.name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, EOFError, OSError, zlib.error) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnreadableFileError(f"{path.name} is corrupt or encrypted and cannot be extracted ({e}).") from e
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, name: str) -> None:
    written = 0
    with archive.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise UnsafeArchiveError(f"{name}: entry {info.filename!r} expands beyond its declared size "
                                         f"{info.file_size:,} bytes; the archive is refused.")
            dst.write(chunk)
