"""Request ids: which client ids are reused, and the filter that puts the
current one on every log record."""

from __future__ import annotations

import logging

import pytest

from vdm.logs import RequestIdFilter, client_request_id, request_id


@pytest.mark.parametrize("value", ["abc", "A-Z_0.9:x", "x" * 128, "req_vdm_0123"])
def test_plain_ids_are_reused(value: str) -> None:
    assert client_request_id(value) == value


@pytest.mark.parametrize("value", [None, "", "x" * 129, "a b", "a;b", "a\nb", "ü", "a/b", "a=b"])
def test_other_ids_are_not(value: str | None) -> None:
    assert client_request_id(value) is None


def test_filter_adds_the_current_id_or_a_dash() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestIdFilter().filter(record) and record.request_id == "-"  # type: ignore[attr-defined]
    token = request_id.set("req_1")
    try:
        RequestIdFilter().filter(record)
        assert record.request_id == "req_1"  # type: ignore[attr-defined]
    finally:
        request_id.reset(token)
