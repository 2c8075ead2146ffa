"""Merged model lists keep every entry as its server wrote it."""

from __future__ import annotations

import json

import pytest

from ollana.cluster.aggregate import MERGED_LISTS, listed, merge
from ollana.cluster.rawlist import raw_items

TAGS = MERGED_LISTS["/api/tags"]
V1 = MERGED_LISTS["/v1/models"]

# What re-encoding would change: Go's HTML escapes, raw UTF-8, number spellings, field order,
# fields ollana has never heard of, whitespace.
A = (
    '{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","size":2.0e9,'
    '"details":{"family":"\\u003cllama\\u003e"},"capabilities":["completion","tools"]},'
    ' {"name":"gpt-oss:120b-cloud","model":"gpt-oss:120b-cloud","remote_model":"gpt-oss:120b",'
    '"remote_host":"https://ollama.com:443","note":"café ✓","future":{"x":[1,2.50]}}]}'
)
B = (
    '{"models":[{"model":"llama3.2","name":"llama3.2","capabilities":["completion"]},'
    '{"name":"phi3:latest","zeta":1,"alpha":null}]}'
)


def entries(body: bytes) -> list[str]:
    found = raw_items(body.decode(), "models")
    assert found is not None
    return found


def test_entries_go_out_byte_for_byte_first_server_first() -> None:
    body = merge(TAGS, [listed(TAGS, A.encode()), listed(TAGS, B.encode())])
    json.loads(body)
    a, b = entries(A.encode()), entries(B.encode())
    # llama3.2 from b is the same model as a's llama3.2:latest: a's entry is kept.
    assert entries(body) == [a[0], a[1], b[1]]
    assert a[0].encode() in body and "café ✓".encode() in body and b"\\u003cllama" in body


def test_v1_models_keep_their_skeleton() -> None:
    doc = b'{"object":"list","data":[{"id":"x:latest","object":"model","owned_by":"library"}]}'
    body = merge(V1, [listed(V1, doc), None])
    assert body == doc + b"\n"  # as json.Encoder ends the /v1 answers


def test_answers_that_are_not_lists_add_nothing() -> None:
    for doc in (b'{"models":null}', b'{"error":"x"}', b"[]", b'{"models":[1,"a",{"name":3}]}'):
        assert json.loads(merge(TAGS, [listed(TAGS, doc)])) == {"models": []}
    assert merge(V1, [None]) == b'{"object":"list","data":null}\n'
    for bad in (b"{", b'{"models":[1,]}', b"\xff"):
        with pytest.raises(ValueError):
            listed(TAGS, bad)


def test_raw_items_reads_only_the_top_level_key() -> None:
    text = ' { "x" : {"models":[1]} , "models" : [ {"a":[1,{"b":"]"}]} , 2 ] } '
    assert raw_items(text, "models") == ['{"a":[1,{"b":"]"}]}', "2"]
    assert raw_items('{"models":[]}', "models") == []
    assert raw_items('{"other":[]}', "models") is None
