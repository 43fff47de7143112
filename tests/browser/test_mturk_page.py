"""The page Mechanical Turk frames, in a real browser, framed by a local stand-in for Amazon's
worker site (a tiny HTTP server on loopback that also takes the externalSubmit post): preview
with answers disabled, and an answer saved in Quorum and then posted on to the stand-in. Nothing
leaves the machine: Mechanical Turk itself is the in-memory fake."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from pytest_django import Settings

from labelling.crowd import platforms, services
from labelling.crowd.models import CrowdAssignment, CrowdBatch
from labelling.crowd.mturk import MTurkPlatform
from labelling.models import Project
from tests.labelling.crowd.conftest import queue_items
from tests.labelling.crowd.fakes import FakeMTurk

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class StandIn:
    """Amazon's worker site, as far as the framed page sees it: a page that frames the task,
    and /mturk/externalSubmit, which records what it was sent."""

    def __init__(self) -> None:
        self.posts: list[dict[str, list[str]]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                src = parse_qs(urlparse(self.path).query).get("src", [""])[0]
                body = (
                    f'<!doctype html><h1>Worker site</h1><iframe id="hit" src="{src}" '
                    'width="800" height="700"></iframe>'
                )
                self._send(body)

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", 0))
                stand_in.posts.append(parse_qs(self.rfile.read(size).decode()))
                self._send('<!doctype html><p id="received">Submitted to the stand-in</p>')

            def _send(self, body: str) -> None:
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def frame(self, src: str) -> str:
        return f"{self.origin}/frame?{urlencode({'src': src})}"


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def hit(
    project: Project, settings: Settings, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeMTurk, CrowdBatch, str]:
    """A published batch of one item on the fake Mechanical Turk; the stand-in may frame it."""
    settings.PUBLIC_URL = "https://quorum.example.org"
    settings.MTURK_WORKER_HOSTS = [stand_in.origin]
    fake = FakeMTurk()
    monkeypatch.setitem(platforms.PLATFORMS, "mturk", lambda: MTurkPlatform(fake))
    queue_items(project, 1, overlap=3)
    batch = services.crowd_batch_create(
        project=project, platform="mturk", size=1, reward="0.05", assignments=3, user=None
    )
    services.crowd_batch_publish(batch=batch)
    return fake, batch, batch.tasks.get().remote_id


def task_url(live_server: Any, stand_in: StandIn, hit_id: str, assignment: str) -> str:
    query = urlencode(
        {
            "assignmentId": assignment,
            "hitId": hit_id,
            "workerId": "W1",
            "turkSubmitTo": stand_in.origin,
        }
    )
    return f"{live_server.url}/ext/mturk/pet-match/?{query}"


def test_the_preview_shows_the_item_with_the_answers_disabled(
    page: Page,
    live_server: Any,
    stand_in: StandIn,
    hit: tuple[FakeMTurk, CrowdBatch, str],
    expect: Any,
) -> None:
    _, _, hit_id = hit
    page.goto(
        stand_in.frame(task_url(live_server, stand_in, hit_id, "ASSIGNMENT_ID_NOT_AVAILABLE"))
    )
    frame = page.frame_locator("#hit")

    expect(frame.locator("#preview-note")).to_be_visible()
    expect(frame.locator(".label-field-value")).to_have_text("item 0")
    for button in frame.locator(".label-btn").all():
        expect(button).to_be_disabled()
    frame.locator("h1").click()
    page.keyboard.press("1")
    page.wait_for_timeout(300)

    assert not CrowdAssignment.objects.exists() and stand_in.posts == []


def test_an_answer_is_saved_in_quorum_then_posted_to_the_worker_site(
    page: Page,
    live_server: Any,
    stand_in: StandIn,
    hit: tuple[FakeMTurk, CrowdBatch, str],
    expect: Any,
) -> None:
    fake, batch, hit_id = hit
    assignment_id = fake.work(hit_id, "W1", "no_match")
    page.goto(stand_in.frame(task_url(live_server, stand_in, hit_id, assignment_id)))
    frame = page.frame_locator("#hit")
    expect(frame.locator(".label-btn").first).to_be_enabled()
    page.wait_for_timeout(200)

    frame.locator("h1").click()
    page.keyboard.press("2")

    expect(frame.locator("#received")).to_have_text("Submitted to the stand-in")
    (post,) = stand_in.posts
    assert post["assignmentId"] == [assignment_id] and post["label"] == ["no_match"]
    saved = CrowdAssignment.objects.get()
    assert (saved.remote_id, saved.worker_id, saved.answer) == (assignment_id, "W1", "no_match")
    assert saved.duration_ms is not None and saved.duration_ms >= 200
    services.crowd_batch_sync(batch=batch)
    saved.refresh_from_db()
    assert saved.status == "submitted" and saved.label is not None


def test_a_site_that_is_not_amazons_cannot_frame_the_page(
    page: Page,
    live_server: Any,
    stand_in: StandIn,
    hit: tuple[FakeMTurk, CrowdBatch, str],
    settings: Settings,
    expect: Any,
) -> None:
    _, _, hit_id = hit
    settings.MTURK_WORKER_HOSTS = ["https://www.mturk.com"]
    page.goto(
        stand_in.frame(task_url(live_server, stand_in, hit_id, "ASSIGNMENT_ID_NOT_AVAILABLE"))
    )
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)

    expect(page.locator("h1")).to_have_text("Worker site")
    assert page.frame_locator("#hit").locator(".label-btn").count() == 0
