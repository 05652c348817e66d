"""Text out of a document (PDF, DOCX, HTML, Markdown, plain text), with where its pages and headings begin.

Parsing runs in a child process (`python -m chatbot_conversation.knowledge.extract MEDIA_TYPE < bytes`), bounded in
memory by the child itself and in time by its parent (`extract_in_child`), so that a hostile file costs a document,
never the process that ingests other tenants' documents.
"""

from __future__ import annotations

import asyncio
import io
import re
import resource
import sys

import msgspec

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MEDIA_TYPES = {
    PDF: ".pdf",
    DOCX: ".docx",
    "text/html": ".html",
    "text/markdown": ".md",
    "text/plain": ".txt",
}
"""What can be indexed, and the file name ending that says so when the upload's type does not."""
_ENDINGS = {
    ".pdf": PDF,
    ".docx": DOCX,
    ".html": "text/html",
    ".htm": "text/html",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
}


class Mark(msgspec.Struct, frozen=True, array_like=True):
    """Where something begins in the text: a page (`level` 0, `title` its number) or a heading of `level` 1-6."""

    at: int
    level: int
    title: str


class Extracted(msgspec.Struct, kw_only=True, tag=True):
    text: str
    marks: list[Mark]
    pages: int | None = None


class Failure(msgspec.Struct, kw_only=True, tag=True):
    error: str


class ExtractionError(Exception):
    """The document cannot be read; the message says why, for its uploader."""


def media_type_of(declared: str, name: str) -> str | None:
    """The media type a document is read as: the declared one when it is one of ours, else the name's ending's."""
    declared = declared.split(";")[0].strip().lower()
    if declared in MEDIA_TYPES:
        return declared
    match = re.search(r"\.[A-Za-z]+$", name)
    return _ENDINGS.get(match.group(0).lower()) if match else None


def _pdf(data: bytes, max_pages: int) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractionError("the PDF is encrypted; upload it without a password")
        count = len(reader.pages)
        if count > max_pages:
            raise ExtractionError(f"the PDF has {count} pages; at most {max_pages} are indexed")
        outline = _outline(reader)
        parts: list[str] = []
        marks: list[Mark] = []
        at = 0
        for number, page in enumerate(reader.pages, start=1):
            marks.append(Mark(at, 0, str(number)))
            marks.extend(Mark(at, level, title) for level, title in outline.get(number - 1, []))
            body = (page.extract_text() or "").strip() + "\n\n"
            parts.append(body)
            at += len(body)
    except PdfReadError as exc:
        raise ExtractionError(f"the PDF cannot be read: {exc}") from exc
    return Extracted(text="".join(parts), marks=marks, pages=count)


def _outline(reader: object) -> dict[int, list[tuple[int, str]]]:
    """The PDF's bookmarks by the page they point at (0-based), as headings of their depth."""
    found: dict[int, list[tuple[int, str]]] = {}

    def walk(items: list[object], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)  # type: ignore[attr-defined]
            except Exception:
                continue
            if page is not None and page >= 0:
                found.setdefault(page, []).append((min(level, 6), str(getattr(item, "title", "")).strip()))

    try:
        walk(reader.outline, 1)  # type: ignore[attr-defined]
    except Exception:
        return {}
    return found


def _docx(data: bytes) -> Extracted:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise ExtractionError(f"the DOCX cannot be read ({type(exc).__name__})") from exc
    parts: list[str] = []
    marks: list[Mark] = []
    at = 0
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            text = "\n".join(" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows)
            level = 0
        else:
            text = block.text.strip()
            style = (block.style.name if block.style is not None else "") or ""
            heading = re.fullmatch(r"Heading (\d)", style)
            level = int(heading.group(1)) if heading else 1 if style == "Title" else 0
        if not text:
            continue
        if level:
            marks.append(Mark(at, level, text))
        parts.append(text + "\n\n")
        at += len(text) + 2
    return Extracted(text="".join(parts), marks=marks)


_BLOCKS = {"p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption", "caption"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


def _html(data: bytes) -> Extracted:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for hidden in soup(["script", "style", "noscript", "template"]):
        hidden.decompose()
    parts: list[str] = []
    marks: list[Mark] = []
    at = 0
    for element in soup.find_all(_BLOCKS | _HEADINGS):
        if element.name in _BLOCKS and element.find(_BLOCKS | _HEADINGS) is not None:
            continue  # its inner blocks are taken one by one
        text = " ".join(element.get_text(" ").split())
        if not text:
            continue
        if element.name in _HEADINGS:
            marks.append(Mark(at, int(element.name[1]), text))
        parts.append(text + "\n\n")
        at += len(text) + 2
    return Extracted(text="".join(parts), marks=marks)


def _markdown(text: str) -> Extracted:
    from markdown_it import MarkdownIt

    line_starts = [0]
    for match in re.finditer("\n", text):
        line_starts.append(match.end())
    tokens = MarkdownIt("commonmark").parse(text)
    marks = [
        Mark(line_starts[token.map[0]], int(token.tag[1]), tokens[index + 1].content.strip())
        for index, token in enumerate(tokens)
        if token.type == "heading_open" and token.map is not None
    ]
    return Extracted(text=text, marks=marks)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"the text is not UTF-8 (byte {exc.start})") from exc


def extract(data: bytes, media_type: str, max_pages: int, max_chars: int) -> Extracted:
    """The document's text and marks; `ExtractionError` saying why when it cannot be read or is too long."""
    if media_type == PDF:
        extracted = _pdf(data, max_pages)
    elif media_type == DOCX:
        extracted = _docx(data)
    elif media_type == "text/html":
        extracted = _html(data)
    elif media_type == "text/markdown":
        extracted = _markdown(_text(data))
    else:
        extracted = Extracted(text=_text(data), marks=[])
    if len(extracted.text) > max_chars:
        raise ExtractionError(f"the document's text has {len(extracted.text)} characters; at most {max_chars} are indexed")
    if not extracted.text.strip():
        raise ExtractionError("the document has no text (a scanned PDF needs text recognition first)")
    return extracted


_result: msgspec.json.Decoder[Extracted | Failure] = msgspec.json.Decoder(Extracted | Failure)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_pages: int
    max_chars: int
    time_s: float
    memory_bytes: int


async def extract_in_child(data: bytes, media_type: str, limits: Limits) -> Extracted:
    """`extract` in a child process that is killed past `limits.time_s` (and cannot grow past `memory_bytes`)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        media_type,
        str(limits.max_pages),
        str(limits.max_chars),
        str(limits.memory_bytes),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(data), limits.time_s)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise ExtractionError(f"reading the document took longer than {limits.time_s:g} s") from None
    if child.returncode != 0 or not out:
        last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1][:300]
        if "MemoryError" in last:
            raise ExtractionError(f"reading the document needed more than {limits.memory_bytes // 2**20} MiB")
        raise ExtractionError(f"the document cannot be read ({last})")
    result = _result.decode(out)
    if isinstance(result, Failure):
        raise ExtractionError(result.error)
    return result


def _child(argv: list[str]) -> None:
    media_type, max_pages, max_chars, memory = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    data = sys.stdin.buffer.read()
    result: Extracted | Failure
    try:
        result = extract(data, media_type, max_pages, max_chars)
    except ExtractionError as exc:
        result = Failure(error=str(exc))
    sys.stdout.buffer.write(msgspec.json.encode(result))


if __name__ == "__main__":
    _child(sys.argv[1:])
