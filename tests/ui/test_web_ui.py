"""The web UI in a real headless Chromium against the real stack: streaming, stop, branches, search, sharing, recovery, usage."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from .conftest import Stack, Steps

DOCUMENTS = Path(__file__).parents[1] / "knowledge" / "documents"

pytestmark = [pytest.mark.e2e, pytest.mark.ui]


def words(n: int, stem: str = "word") -> str:
    return " ".join(f"{stem}{i}" for i in range(n)) + "."


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message", exact=True)
    box.fill(text)
    box.press("Enter")


def last_answer(page: Page) -> str:
    return page.locator("article.bubble.assistant .content").last.inner_text().strip()


def wait_until_answered(page: Page, expected: str) -> None:
    """The answer is complete and stored: no streaming bubble is left and the last answer reads `expected`."""
    expect(page.locator("article.bubble.streaming")).to_have_count(0, timeout=30_000)
    expect(page.locator("article.bubble.assistant .content").last).to_have_text(expected)


def ask_then_edit(page: Page, stack: Stack, first: tuple[str, str], edited: tuple[str, str], steps: Steps | None = None) -> None:
    """Ask `first[0]` (answered `first[1]`), then edit the question into `edited[0]` (answered `edited[1]`): two branches."""
    stack.upstream.reply = first[1]
    send(page, first[0])
    wait_until_answered(page, first[1])
    question = page.locator("article.bubble.user").last
    question.get_by_role("button", name="Edit").click()
    editor = question.get_by_label("Edit your message")
    editor.fill(edited[0])
    if steps:
        steps.shot(page, "editing")
    stack.upstream.reply = edited[1]
    editor.press("Enter")
    wait_until_answered(page, edited[1])


def share_link(page: Page) -> tuple[Locator, str]:
    """Open the share dialog, create a link, and return the dialog and the link."""
    page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share a read-only link")
    dialog.get_by_role("button", name="Create link").click()
    link = dialog.get_by_label("Link")
    expect(link).to_have_value(re.compile("/shared/"))
    return dialog, link.input_value()


def conversation_of(page: Page) -> str:
    page.wait_for_url("**/c/**")
    return page.url.split("/c/", 1)[1].split("?", 1)[0]


def api(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=10)


def test_an_answer_streams_in_as_it_is_written(page: Page, stack: Stack, steps: Steps) -> None:
    stack.upstream.reply = words(50)
    steps.shot(page, "new-chat")
    send(page, "Tell me fifty words.")
    expect(page.locator("article.bubble.user").last).to_contain_text("Tell me fifty words.")
    streaming = page.locator("article.bubble.streaming .content")
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and page.locator("article.bubble.streaming").count():
        # One look that does not wait: the bubble may stop streaming between two calls.
        texts = streaming.all_inner_texts()
        text = texts[0].strip() if texts else ""
        if text and (not seen or text != seen[-1]):
            seen.append(text)
            if len(seen) == 3:
                steps.shot(page, "streaming")
        page.wait_for_timeout(50)
    # The text grew over several frames, each a prefix of the next, before the whole answer was there.
    assert len(seen) >= 5, seen
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(seen)), seen
    wait_until_answered(page, stack.upstream.reply)
    expect(page.get_by_role("heading", level=1)).to_have_text("Tell me fifty words.")
    steps.shot(page, "answered")


def test_stop_ends_the_answer_and_keeps_what_was_written(page: Page, stack: Stack, steps: Steps) -> None:
    stack.upstream.reply = words(300)
    send(page, "Talk for a long time.")
    streaming = page.locator("article.bubble.streaming .content")
    expect(streaming).to_contain_text("word5")
    page.get_by_role("button", name="Stop").click()
    steps.shot(page, "stopping")
    expect(page.locator("article.bubble.streaming")).to_have_count(0)
    answer = page.locator("article.bubble.assistant").last
    expect(answer).to_contain_text("Stopped")
    kept = answer.locator(".content").inner_text().strip()
    assert kept and stack.upstream.reply.startswith(kept) and len(kept) < len(stack.upstream.reply)
    stored = api(stack).get(f"/api/v1/conversations/{conversation_of(page)}").json()
    assert [m["status"] for m in stored["messages"] if m["role"] == "assistant"] == ["cancelled"]
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    steps.shot(page, "stopped")


def test_editing_a_question_makes_a_branch_that_can_be_switched(page: Page, stack: Stack, steps: Steps) -> None:
    ask_then_edit(page, stack, ("What is a branch?", "An answer."), ("What is a fork?", "Another answer."), steps)
    question = page.locator("article.bubble.user").last
    expect(question).to_contain_text("What is a fork?")
    expect(question.locator(".branch-count")).to_have_text("2 / 2")
    steps.shot(page, "second-version")

    question.get_by_role("button", name="Previous version").click()
    question = page.locator("article.bubble.user").last
    expect(question).to_contain_text("What is a branch?")
    expect(question.locator(".branch-count")).to_have_text("1 / 2")
    expect(page.locator("article.bubble.assistant .content").last).to_have_text("An answer.")
    steps.shot(page, "back-to-first")

    # The choice is kept on the server: a reload shows the same branch.
    page.reload()
    expect(page.locator("article.bubble.user").last.locator(".branch-count")).to_have_text("1 / 2")
    expect(page.locator("article.bubble.user").last).to_contain_text("What is a branch?")


def test_search_finds_a_message_on_another_branch_and_shows_it(page: Page, stack: Stack, steps: Steps) -> None:
    ask_then_edit(
        page,
        stack,
        ("Tell me about the axolotl and the quokka.", "The axolotl regrows its limbs."),
        ("Tell me about the quokka only.", "Quokkas smile."),
    )

    page.get_by_role("searchbox", name="Search conversations").fill("axolotl")
    hit = page.locator(".hits .hit").filter(has_text="regrows").first
    expect(hit.locator("mark").first).to_have_text("axolotl")
    expect(hit).to_contain_text("(on another branch)")
    steps.shot(page, "search-results")
    hit.click()
    shown = page.locator("article.bubble.highlighted")
    expect(shown).to_contain_text("The axolotl regrows its limbs.")
    expect(page.locator("article.bubble.user").last).to_contain_text("Tell me about the axolotl and the quokka.")
    steps.shot(page, "jumped-to-message")


def test_a_share_link_opens_read_only_without_a_key(page: Page, stack: Stack, browser: Browser, steps: Steps) -> None:
    stack.upstream.reply = "Shared **knowledge**."
    send(page, "Something worth sharing")
    wait_until_answered(page, "Shared knowledge.")
    dialog, url = share_link(page)
    assert url.startswith(f"{stack.url}/shared/")
    steps.shot(page, "share-dialog")

    stranger = browser.new_context()
    try:
        shared = stranger.new_page()
        shared.goto(url)
        expect(shared.get_by_role("heading", level=1)).to_have_text("Something worth sharing")
        expect(shared.get_by_text("Read-only snapshot")).to_be_visible()
        expect(shared.locator("article").last).to_contain_text("Shared knowledge.")
        expect(shared.locator("article strong")).to_have_text("knowledge")
        assert shared.get_by_role("textbox", name="Message", exact=True).count() == 0 and shared.get_by_label("API key").count() == 0
        steps.shot(shared, "shared-page")

        dialog.get_by_role("button", name="Revoke").click()
        expect(dialog.get_by_role("status")).to_have_text("The link no longer works.")
        shared.reload()
        expect(shared.get_by_role("alert")).to_be_visible()
        steps.shot(shared, "revoked")
    finally:
        stranger.close()


def test_a_connection_dropped_mid_answer_recovers_the_whole_text(page: Page, stack: Stack, steps: Steps) -> None:
    stack.upstream.reply = words(60, "part")
    resumed: list[str] = []
    page.on("request", lambda request: resumed.append(request.url) if request.url.endswith("/events") else None)
    send(page, "A long answer, please.")
    expect(page.locator("article.bubble.streaming .content")).to_contain_text("part10")
    assert stack.proxy.cut() >= 1
    steps.shot(page, "connection-cut")
    wait_until_answered(page, stack.upstream.reply)
    assert resumed, "the UI never asked to resume the stream"
    steps.shot(page, "recovered")


def test_a_reload_mid_answer_picks_the_stream_up_again(page: Page, stack: Stack, steps: Steps) -> None:
    stack.upstream.reply = words(60, "item")
    send(page, "Keep going while I reload.")
    expect(page.locator("article.bubble.streaming .content")).to_contain_text("item5")
    page.reload()
    expect(page.locator("article.bubble.streaming")).to_have_count(1)
    steps.shot(page, "after-reload")
    wait_until_answered(page, stack.upstream.reply)


def test_model_selection_is_kept_per_conversation(page: Page, stack: Stack) -> None:
    stack.upstream.reply = "From the mini model."
    page.get_by_label("Model", exact=True).select_option("fake-mini")
    send(page, "Which model are you?")
    wait_until_answered(page, "From the mini model.")
    conversation = conversation_of(page)
    expect(page.get_by_label("Model", exact=True)).to_have_value("fake-mini")
    client = api(stack)
    assert client.get(f"/api/v1/conversations/{conversation}").json()["model"] == "fake-mini"
    assert stack.upstream.requests[-1]["model"] == "fake-mini"
    # Changed mid-conversation, the next answer comes from the other model.
    page.get_by_label("Model", exact=True).select_option("fake")
    expect(page.get_by_label("Model", exact=True)).to_have_value("fake")
    stack.upstream.reply = "From the big model."
    send(page, "And now?")
    wait_until_answered(page, "From the big model.")
    assert stack.upstream.requests[-1]["model"] == "fake-model"
    assert page.locator("article.bubble.assistant .who").last.inner_text() == "fake"


def test_the_sidebar_renames_tags_filters_pins_and_deletes(page: Page, stack: Stack, steps: Steps) -> None:
    stack.upstream.reply = "Noted."
    send(page, "Remember the milk")
    wait_until_answered(page, "Noted.")
    conversation = conversation_of(page)
    item = page.locator("li.conversation.active")
    item.get_by_role("button", name="Actions for").click()
    item.get_by_label("Add a tag").fill("errands")
    item.get_by_label("Add a tag").press("Enter")
    expect(page.locator("li.conversation.active .tags")).to_contain_text("#errands")
    page.locator("li.conversation.active").get_by_role("button", name="Rename", exact=True).click()
    page.get_by_label("New title").fill("Shopping list")
    page.get_by_label("New title").press("Enter")
    item = page.locator("li.conversation.active")
    expect(item.locator("button.open")).to_have_text("Shopping list")
    item.get_by_role("button", name="Actions for").click()
    item.get_by_role("button", name="Pin", exact=True).click()
    expect(page.get_by_role("region", name="Pinned")).to_contain_text("Shopping list")
    page.get_by_role("group", name="Filter by tag").get_by_role("button", name="#errands").click()
    expect(page.locator("li.conversation")).to_have_count(1)
    steps.shot(page, "filtered-by-tag")
    stored = api(stack).get(f"/api/v1/conversations/{conversation}").json()
    assert (stored["title"], stored["tags"], stored["pinned"]) == ("Shopping list", ["errands"], True)

    page.once("dialog", lambda dialog: dialog.accept())
    item = page.locator("li.conversation.active")
    item.get_by_role("button", name="Actions for").click()
    item.get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_url(f"{stack.url}/")
    assert api(stack).get(f"/api/v1/conversations/{conversation}").status_code == 404


def test_usage_page_charts_tokens_and_cost_by_model(page: Page, stack: Stack, steps: Steps) -> None:
    stack.upstream.reply = "Counted."
    send(page, "Count me in the usage.")
    wait_until_answered(page, "Counted.")
    page.get_by_role("button", name="Usage", exact=True).click()
    page.wait_for_url("**/usage")
    page.get_by_label("Range").select_option(label="Last hour")
    # The log collector aggregates within moments; the page shows what it has when opened.
    deadline = time.monotonic() + 15
    while page.locator("table.by-model").count() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        page.get_by_label("Range").select_option(label="Last 24 hours")
        page.get_by_label("Range").select_option(label="Last hour")
    expect(page.get_by_role("figure", name="Tokens by model").get_by_role("application")).to_be_visible()
    expect(page.get_by_role("figure", name="Cost by model (USD)")).to_be_visible()
    expect(page.locator("table.by-model tbody")).to_contain_text("fake")
    steps.shot(page, "usage")


def test_phone_width_dark_theme_and_keyboard(browser: Browser, stack: Stack, steps: Steps) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", has_touch=True)
    try:
        page = context.new_page()
        page.goto(f"{stack.url}/#key={stack.key}")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        sidebar = page.get_by_role("navigation", name="Conversations")
        expect(sidebar).not_to_be_in_viewport()
        steps.shot(page, "phone")
        page.get_by_role("button", name="Conversations").click()
        expect(sidebar).to_be_in_viewport(ratio=1)
        steps.shot(page, "phone-drawer")
        page.get_by_role("button", name="New chat").click()
        expect(sidebar).not_to_be_in_viewport()
        # Keyboard only: the message box is reachable and sends with Enter.
        stack.upstream.reply = "Typed without a mouse."
        page.get_by_role("textbox", name="Message", exact=True).focus()
        page.keyboard.type("Hello from a keyboard")
        page.keyboard.press("Enter")
        wait_until_answered(page, "Typed without a mouse.")
        page.get_by_role("button", name="Theme: system. Switch to light").click()
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        steps.shot(page, "phone-light")
    finally:
        context.close()


def test_a_wrong_key_is_refused_with_the_gateways_reason(browser: Browser, stack: Stack, steps: Steps) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(stack.url)
        page.get_by_label("API key").fill("sk-not-a-key")
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("alert")).to_contain_text("key")
        steps.shot(page, "wrong-key")
        page.get_by_label("API key").fill(stack.key)
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("textbox", name="Message", exact=True)).to_be_visible()
    finally:
        context.close()


def test_regenerate_makes_a_sibling_answer_and_fork_copies_the_path(page: Page, stack: Stack, steps: Steps) -> None:
    stack.upstream.reply = "First take."
    send(page, "Give me a take.")
    wait_until_answered(page, "First take.")
    original = conversation_of(page)
    stack.upstream.reply = "Second take."
    page.locator("article.bubble.assistant").last.get_by_role("button", name="Regenerate").click()
    wait_until_answered(page, "Second take.")
    answer = page.locator("article.bubble.assistant").last
    expect(answer.locator(".branch-count")).to_have_text("2 / 2")
    answer.get_by_role("button", name="Previous version").click()
    expect(page.locator("article.bubble.assistant .content").last).to_have_text("First take.")
    steps.shot(page, "regenerated")

    page.locator("article.bubble.assistant").last.get_by_role("button", name="Fork").click()
    page.wait_for_url(lambda url: "/c/" in url and original not in url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Give me a take. (fork)")
    expect(page.locator("article.bubble.assistant .content")).to_have_text(["First take."])
    steps.shot(page, "forked")


def test_a_failed_answer_says_why_and_retry_answers_again(page: Page, stack: Stack, steps: Steps) -> None:
    from chatbot_devtools.fakes.base import Fault

    stack.upstream.faults.append(Fault(status=400, message="the prompt was refused upstream"))
    send(page, "This one fails.")
    failed = page.locator("article.bubble.assistant.failed")
    expect(failed.get_by_role("alert")).to_contain_text("the prompt was refused upstream")
    steps.shot(page, "failed")
    stack.upstream.reply = "Recovered."
    failed.get_by_role("button", name="Retry").click()
    wait_until_answered(page, "Recovered.")
    expect(page.locator("article.bubble.assistant").last.locator(".branch-count")).to_have_text("2 / 2")
    steps.shot(page, "retried")


def test_an_image_is_attached_shown_to_the_model_and_kept(page: Page, stack: Stack, steps: Steps, browser: Browser) -> None:
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 24 for _ in range(16))
    image = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 24, 16, 8, 2, 0, 0, 0))
    image += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    stack.upstream.reply = "A red rectangle. "
    page.get_by_label("Image files").set_input_files([{"name": "red.png", "mimeType": "image/png", "buffer": image}])
    expect(page.get_by_alt_text("red.png")).to_be_visible()
    steps.shot(page, "attached")
    send(page, "What colour is this?")
    wait_until_answered(page, "A red rectangle.")
    sent = stack.upstream.requests[-1]["messages"][-1]["content"]
    assert sent[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(image).decode(), "the model saw the image"

    shown = page.locator("article.bubble.user").last.locator("img.attached")
    expect(shown).to_have_count(1)
    page.reload()
    shown = page.locator("article.bubble.user").last.locator("img.attached")
    expect(shown).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function("img => img.complete && img.naturalWidth === 24 && img.naturalHeight === 16", arg=shown.element_handle())
    steps.shot(page, "after-reload")

    _, url = share_link(page)
    stranger = browser.new_context()
    try:
        shared = stranger.new_page()
        shared.goto(url)
        image = shared.locator("article img.attached")
        expect(image).to_have_attribute("src", re.compile(r"^blob:"))
        shared.wait_for_function("img => img.complete && img.naturalWidth === 24", arg=image.element_handle())
        steps.shot(shared, "shared-with-image")
    finally:
        stranger.close()


def test_a_document_is_indexed_and_a_citation_opens_its_passage_highlighted(page: Page, stack: Stack, steps: Steps) -> None:
    page.get_by_role("button", name="Knowledge", exact=True).click()
    page.get_by_role("textbox", name="New knowledge base").fill("Handbook")
    page.get_by_role("button", name="Create").click()
    page.get_by_label("Add documents").set_input_files(str(DOCUMENTS / "employee-handbook.pdf"))
    document = page.locator(".kb-document-list li", has_text="employee-handbook.pdf")
    expect(document.get_by_role("status")).to_have_text(re.compile(r"ready · \d+ passages · 4 pages"), timeout=60_000)
    steps.shot(page, "indexed")
    page.reload()
    page.get_by_role("button", name="Handbook", exact=True).click()
    expect(document.get_by_role("status")).to_have_text(re.compile(r"ready · \d+ passages · 4 pages"))
    page.get_by_role("button", name="New chat").click()
    page.get_by_text("Knowledge: none").click()
    page.get_by_role("checkbox", name="Handbook").check()
    expect(page.get_by_text("Grounded in Handbook")).to_be_visible()
    stack.upstream.reply = "Within 45 days [1]. Lunch is free [8]."
    try:
        send(page, "How long do I have to submit my travel expenses?")
        wait_until_answered(page, "Within 45 days [1]. Lunch is free [8].")
    finally:
        stack.upstream.reply = None
    expect(page.get_by_role("note")).to_have_text("No such source: [8]")
    expect(page.get_by_role("button", name=re.compile(r"^\[8\]"))).to_have_count(0)
    page.get_by_role("button", name="[1] employee-handbook.pdf, p. 3").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("mark.cited")).to_contain_text("Ledgerly portal")
    expect(dialog.locator("mark.cited")).to_be_in_viewport()
    steps.shot(page, "passage")
