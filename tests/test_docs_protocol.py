"""docs/protocol.md against the code: the page must not drift from `trizmq._wire`."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

from trizmq import ProtocolError
from trizmq._wire import _CLASS_OF, VERSION, Call, ErrorCode, Kind, Reply, decode, encode

PAGE = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

#: The envelopes of the worked example, as the page states them.
WORKED_EXAMPLE = {
    "The call": Call(id=1, topic="compute", method="ping", args={"x": 1}, context={}, timeout=2.0),
    "The reply": Reply(id=1, result="pong"),
}


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The text under the heading `title`, up to the next heading of its level or above."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", text, re.MULTILINE)
    assert match, f"docs/protocol.md has no heading {title!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def table(text: str, header: list[str]) -> list[list[str]]:
    """The body rows of the Markdown table whose header row is `header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and cells(line) == header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            return rows
    raise AssertionError(f"no table with header {header} in docs/protocol.md")


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def code(cell: str) -> str:
    """The text of a cell that is one inline code span."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"expected one `code` span, got {cell!r}"
    return match.group(1)


@pytest.mark.parametrize("title", list(WORKED_EXAMPLE))
def test_worked_example_bytes_are_what_encode_produces(page: str, title: str) -> None:
    text = section(page, title)
    expected = encode(WORKED_EXAMPLE[title])

    # The hex shown as the output of the example session.
    (session,) = code_blocks(text, "pycon")
    shown = re.findall(r"^'((?:[0-9a-f]{2} )*[0-9a-f]{2})'$", session, re.MULTILINE)
    assert shown, f"no hex output in the pycon block of {title!r}"
    assert [bytes.fromhex(h) for h in shown] == [expected]

    # The byte-by-byte breakdown adds up to the same frame.
    rows = table(text, ["Bytes", "msgpack", "Meaning"])
    assert bytes.fromhex(" ".join(code(row[0]) for row in rows)) == expected


def test_example_sessions_run_as_shown(page: str) -> None:
    sessions = "\n".join(code_blocks(page, "pycon"))
    test = doctest.DocTestParser().get_doctest(sessions, {}, PAGE.name, str(PAGE), 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


def test_every_kind_is_in_the_table_with_its_number_and_fields(page: str) -> None:
    rows = table(
        section(page, "Message kinds"), ["Kind", "Number", "Fields, in order", "Sent by", "Meaning"]
    )
    documented = {code(row[0]): (int(row[1]), row[2]) for row in rows}
    assert set(documented) == {kind.name for kind in Kind}
    for kind in Kind:
        number, fields = documented[kind.name]
        assert number == kind.value, kind.name
        names = [code(name.strip()) for name in fields.split(",")]
        assert names == list(_CLASS_OF[kind].__struct_fields__), kind.name


def test_every_error_code_is_documented(page: str) -> None:
    rows = table(
        section(page, "Error codes"), ["Code", "The service sends it when", "The caller raises"]
    )
    values = {v for k, v in vars(ErrorCode).items() if not k.startswith("_")}
    assert {code(row[0]) for row in rows} == values


def test_decoding_examples_give_the_documented_messages(page: str) -> None:
    rows = table(section(page, "Decoding rules"), ["Frame (hex)", "What is wrong", "Message"])
    assert len(rows) >= 3
    for frame, _, message in rows:
        with pytest.raises(ProtocolError) as info:
            decode(bytes.fromhex(code(frame)))
        assert str(info.value) == code(message), frame


def test_version_on_the_page_is_the_current_one(page: str) -> None:
    assert f"the integer `{VERSION}` (`trizmq._wire.VERSION`)" in section(page, "Framing")
