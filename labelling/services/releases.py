"""Releases: freeze a project's decided items into a checked, numbered, hashed export.

The rows are streamed into a staging folder while they are hashed, counted and checked; only when
every check passed (or was overridden with a reason) is the folder published under its version and
the Release row written. A failure anywhere leaves neither files under a version nor a row.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from core.exceptions import Conflict, InputError, InvalidInput
from labelling.models import Job, Project, Release
from labelling.releases import checks, rows
from labelling.releases.formats import EXTENSIONS, FORMATS, HashingWriter, line_writer
from labelling.releases.pgcopy import (
    copy_chunks,
    enter_snapshot,
    export_snapshot,
    release_settings,
)
from labelling.releases.storage import ReleaseStorage, default_storage_url, discard, storage_for
from labelling.services.decisions import decisions_paused, snapshot_time, sqlite_write_lock

Progress = Callable[[int, int], None]
PROGRESS_EVERY = 20_000
# Namespace of the PostgreSQL advisory lock that numbers a project's releases one at a time
# (a lock on the project row would hold up labelling while a large release is uploaded).
ADVISORY_NAMESPACE = 7007
MAX_REASON = 2000


@dataclass(frozen=True)
class ReleaseRequest:
    """What the engineer asks for: format, filters, and overrides of failed checks."""

    fmt: str = "jsonl"
    filters: rows.Filters = field(default_factory=rows.Filters)
    override_reason: str = ""
    override_checks: tuple[str, ...] | None = None
    # Keep the project's personal payload fields in the rows (left out by default).
    include_personal: bool = False

    def as_params(self) -> dict[str, Any]:
        """The request as a job's parameters."""
        return {
            "format": self.fmt,
            "filters": self.filters.as_dict(),
            "override_reason": self.override_reason,
            "override_checks": list(self.override_checks) if self.override_checks else None,
            "include_personal": self.include_personal,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ReleaseRequest:
        """The request a job's parameters describe."""
        checked = params.get("override_checks")
        return cls(
            fmt=params["format"],
            filters=rows.Filters(**params["filters"]),
            override_reason=params.get("override_reason") or "",
            override_checks=tuple(checked) if checked else None,
            include_personal=bool(params.get("include_personal", False)),
        )

    def omitted(self, project: Project) -> list[str]:
        """The payload fields the rows leave out: the project's personal ones, unless asked for."""
        return [] if self.include_personal else list(project.personal_fields or [])


def release_request_validate(request: ReleaseRequest) -> None:
    """Raise InvalidInput naming every problem of a release request."""
    errors = []
    if request.fmt not in FORMATS:
        errors.append(InputError(f"must be one of {', '.join(FORMATS)}", field="format"))
    unknown = sorted(set(request.override_checks or ()) - set(checks.CHECKS))
    if unknown:
        known = ", ".join(checks.CHECKS)
        errors.append(
            InputError(f"unknown checks {unknown} (known: {known})", field="override_checks")
        )
    if request.override_checks and not request.override_reason.strip():
        errors.append(InputError("overriding checks needs a reason", field="override_reason"))
    if len(request.override_reason) > MAX_REASON:
        errors.append(InputError(f"at most {MAX_REASON} characters", field="override_reason"))
    if errors:
        raise InvalidInput("the release request is invalid", errors=errors)


@functools.cache
def code_version() -> str:
    """The code a release was made by: QUORUM_CODE_VERSION, else the checkout's git commit."""
    if settings.CODE_VERSION:
        return str(settings.CODE_VERSION)
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() or "unknown"


def _previous_comparable(project: Project, filters: rows.Filters) -> Release | None:
    """The newest release with the same split and source: what class drift compares with."""
    for release in project.releases.order_by("-version"):
        if rows.Filters(**release.filters).same_selection() == filters.same_selection():
            return release
    return None


@dataclass
class Written:
    """What streaming the rows produced."""

    row_count: int
    sha256: str
    size_bytes: int
    class_counts: dict[str, int]
    label_source_counts: dict[str, int]


def _python_lines(
    project: Project, chosen: rows.Selection, fmt: str, omit: list[str]
) -> Generator[bytes]:
    header, line = line_writer(fmt, project)
    build = rows.RowBuilder(project, omit)
    yield header
    for raw in rows.raw_rows(chosen):
        yield line(build(raw).data)


def _chunks(
    project: Project,
    chosen: rows.Selection,
    fmt: str,
    omit: list[str],
    snapshot: str | None,
    total: int,
) -> Generator[bytes]:
    """The data file's bytes: written by PostgreSQL itself (COPY; in runs on several connections
    sharing the release's `snapshot`, if any), else row by row in Python; without the payload
    fields in `omit`."""
    if connection.vendor == "postgresql":
        return copy_chunks(project, chosen, fmt, omit, snapshot=snapshot, total=total)
    return _python_lines(project, chosen, fmt, omit)


def _stream(
    project: Project,
    chosen: rows.Selection,
    request: ReleaseRequest,
    path: Path,
    progress: Progress | None,
    total: int,
    snapshot: str | None,
) -> tuple[str, int]:
    """Write the `total` selected rows to `path`, hashing as it goes; their sha256 and size."""
    reported = 0
    with open(path, "wb") as stream, HashingWriter(stream) as out:
        # Closed on any failure: an abandoned COPY would hold the connection for ever.
        omit = request.omitted(project)
        chunks = _chunks(project, chosen, request.fmt, omit, snapshot, total)
        with contextlib.closing(chunks):
            for chunk in chunks:
                out.write(chunk)
                # Lines approximate rows (a CSV cell may hold a newline): enough for progress.
                if progress and out.lines - reported >= PROGRESS_EVERY:
                    progress(min(out.lines, total), total)
                    reported = out.lines
    return out.sha256.hexdigest(), out.size


def _manifest(
    project: Project,
    request: ReleaseRequest,
    written: Written,
    results: list[checks.CheckResult],
    overrides: list[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "project": project.slug,
        **extra,
        "format": request.fmt,
        "filters": request.filters.as_dict(),
        "row_count": written.row_count,
        "labels": list(project.labels),
        "fields": list(rows.FIELDS),
        "class_counts": written.class_counts,
        "label_source_counts": written.label_source_counts,
        "checks": [r.as_dict() for r in results],
        "overrides": overrides,
        "sha256": written.sha256,
        "size_bytes": written.size_bytes,
        "code_version": code_version(),
        "labellers": "pseudonymous: hmac-sha256(SECRET_KEY, project id and labeller id), 16 hex",
        "personal_fields": {
            "fields": list(project.personal_fields or []),
            "included": request.include_personal,
        },
    }


def _lock_numbering(project: Project) -> None:
    """One release of a project numbered and published at a time, to the end of the transaction.

    SQLite: its write lock, taken before the newest version is read. A transaction that read
    first and wrote later could not wait for another writer: it would fail, or (without the
    lock) publish its folder over the other release's under the same version.
    """
    if connection.vendor != "postgresql":
        sqlite_write_lock(project.pk)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_NAMESPACE, project.pk])


@dataclass
class Built:
    """A release written to staging and checked, waiting to be published."""

    staging: Path
    written: Written
    results: list[checks.CheckResult]
    overrides: list[dict[str, Any]]
    last: Release | None
    watermark: dict[str, Any]


@transaction.atomic
def _publish(
    *,
    project: Project,
    request: ReleaseRequest,
    built: Built,
    storage: ReleaseStorage,
    user: Any,
    job: Job | None,
) -> Release:
    """Number the release, publish its folder and record it, all or nothing."""
    _lock_numbering(project)
    newest = project.releases.order_by("-version").first()
    if (newest and newest.pk) != (built.last and built.last.pk):
        raise Conflict("another release of this project was published meanwhile: run it again")
    version = (newest.version if newest else 0) + 1
    now = datetime.now(UTC)
    by = user.get_username() if getattr(user, "is_authenticated", False) else ""
    data_file = f"data.{EXTENSIONS[request.fmt]}"
    extra = {"version": version, "created_at": now.isoformat(), "created_by": by}
    extra["data_file"] = data_file
    manifest = _manifest(project, request, built.written, built.results, built.overrides, extra)
    (built.staging / "manifest.json").write_bytes(
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    )
    location = storage.publish(staging=built.staging, folder=f"{project.slug}/v{version}")
    try:
        return Release.objects.create(
            project=project,
            version=version,
            filters=request.filters.as_dict(),
            format=request.fmt,
            row_count=built.written.row_count,
            class_counts=built.written.class_counts,
            label_source_counts=built.written.label_source_counts,
            checks=manifest["checks"],
            overrides=built.overrides,
            sha256=built.written.sha256,
            location=location,
            data_file=data_file,
            size_bytes=built.written.size_bytes,
            code_version=manifest["code_version"],
            watermark=built.watermark,
            manifest=manifest,
            job=job,
            created_by=user if by else None,
            created_at=now,
        )
    except IntegrityError:
        storage.remove(location)
        raise Conflict("another release took this version number: run it again") from None
    except BaseException:
        storage.remove(location)
        raise


def _check_overrides(
    results: list[checks.CheckResult], request: ReleaseRequest, user: Any
) -> list[dict[str, Any]]:
    by = user.get_username() if getattr(user, "is_authenticated", False) else "command line"
    overrides = checks.apply_overrides(
        results,
        reason=request.override_reason.strip(),
        checks=list(request.override_checks) if request.override_checks else None,
        user=by,
    )
    if checks.blocking(results):
        raise checks.ChecksFailed(results)
    return overrides


@contextlib.contextmanager
def _snapshot(project: Project) -> Iterator[tuple[datetime, bool]]:
    """One consistent view of the data for the checks, the counts and the rows: a REPEATABLE READ
    transaction on PostgreSQL (inside an outer transaction, that transaction's view). Yields the
    time it starts, which no decision it cannot see is older than (see services/decisions.py),
    and whether the view is a transaction of its own (which a second connection can share)."""
    postgresql = connection.vendor == "postgresql"
    repeatable = postgresql and not connection.in_atomic_block
    with decisions_paused(project) as resume, transaction.atomic():
        with connection.cursor() as cursor:
            if repeatable:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if postgresql:
                release_settings(cursor)
        at = snapshot_time(project)
        resume()
        yield at, repeatable


@dataclass
class Examined:
    """What the release's checks found in its rows (class drift aside, which compares counts),
    and the rows' counts by final label and by label source."""

    duplicates: checks.CheckResult
    leakage: checks.CheckResult
    schema: checks.CheckResult
    classes: dict[str, int]
    sources: dict[str, int]


def _examine(project: Project, chosen: rows.Selection) -> Examined:
    duplicates, leakage = checks.content_checks(project.pk, chosen)
    classes, sources = rows.label_counts(chosen)
    schema = checks.payload_schema(chosen, project.schema or {})
    return Examined(duplicates, leakage, schema, classes, sources)


def _examine_in(snapshot: str, project: Project, chosen: rows.Selection) -> Examined:
    """_examine on this thread's own connection, in the release's exported snapshot."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            enter_snapshot(cursor, snapshot)
            return _examine(project, chosen)
    finally:
        connection.close()


@contextlib.contextmanager
def _examining(
    project: Project, chosen: rows.Selection, snapshot: str | None
) -> Iterator[Future[Examined]]:
    """The release's checks and counts, as a future.

    With the release's `snapshot`: on a connection of their own, in that snapshot, while the
    rows are written (PostgreSQL builds and sorts every row before the first arrives: the checks
    take a core of their own meanwhile). Else run here and now, done before a row is written.
    Leaving the block waits for the other connection's work, whatever happened meanwhile.
    """
    if snapshot is None:
        done: Future[Examined] = Future()
        done.set_result(_examine(project, chosen))
        yield done
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="release-checks") as pool:
        yield pool.submit(_examine_in, snapshot, project, chosen)


def _verdict(
    project: Project, request: ReleaseRequest, user: Any, found: Examined
) -> tuple[list[checks.CheckResult], list[dict[str, Any]]]:
    """Every check's result, and the overrides to record; raise if a check blocks the release."""
    previous = _previous_comparable(project, request.filters)
    drift = checks.class_drift(
        found.classes,
        previous.class_counts if previous else None,
        previous.version if previous else None,
        project.release_max_class_drift,
    )
    results = [found.duplicates, found.leakage, drift, found.schema]
    return results, _check_overrides(results, request, user)


def _build(
    project: Project,
    request: ReleaseRequest,
    storage: ReleaseStorage,
    user: Any,
    progress: Progress | None,
) -> Built:
    """Select, check and write the release to a staging folder; raise if a check blocks it."""
    with _snapshot(project) as (at, own):
        last = project.releases.order_by("-version").first()
        watermark = rows.watermark_at(at)
        chosen = rows.selection(project, request.filters, last.watermark if last else None)
        total = rows.count(chosen)
        if not total:
            raise InvalidInput(
                "nothing to release: no approved or resolved items match "
                f"{request.filters.as_dict()}"
            )
        # Shared by the connections that check and write the release beside this one.
        snapshot = export_snapshot() if own else None
        staging = storage.staging()
        try:
            with _examining(project, chosen, snapshot) as examined:
                verdict = None
                if examined.done():  # checks run here and now: fail before a byte is written
                    verdict = _verdict(project, request, user, examined.result())
                path = staging / "data"
                sha256, size = _stream(project, chosen, request, path, progress, total, snapshot)
                found = examined.result()
            results, overrides = verdict or _verdict(project, request, user, found)
            path.rename(staging / f"data.{EXTENSIONS[request.fmt]}")
        except BaseException:
            discard(staging)
            raise
    written = Written(total, sha256, size, found.classes, found.sources)
    return Built(staging, written, results, overrides, last, watermark)


def release_create(
    *,
    project: Project,
    user: Any = None,
    request: ReleaseRequest | None = None,
    storage_url: str | None = None,
    progress: Progress | None = None,
    job: Job | None = None,
) -> Release:
    """Freeze the project's decided items as its next release; raise if a check blocks it."""
    request = request or ReleaseRequest()
    release_request_validate(request)
    storage = storage_for(storage_url or default_storage_url())
    built = _build(project, request, storage, user, progress)
    try:
        return _publish(
            project=project, request=request, built=built, storage=storage, user=user, job=job
        )
    finally:
        discard(built.staging)


def release_download_url(*, release: Release, streamed_url: str) -> str:
    """Where to fetch the data file: a presigned link on S3, else the streamed download."""
    return storage_for(release.location).presigned_url(release.location, release.data_file) or (
        streamed_url
    )


def release_chunks(*, release: Release) -> Any:
    """The bytes of a release's data file, streamed from its storage."""
    return storage_for(release.location).chunks(release.location, release.data_file)
