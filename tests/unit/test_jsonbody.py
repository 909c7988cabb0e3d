"""gateway/jsonbody.py: orjson on the request path, with json's values in every corner."""

from __future__ import annotations

import json

import pytest

from gateway import jsonbody
from gateway.tenancy import names, scope

PROJECT = "3f0c1b2a4d5e6f708192a3b4c5d6e7f8"


@pytest.mark.parametrize(
    "text",
    [
        b'{"Id":"abc","Size":1,"Labels":{"k":"v"},"A":[1,2.5,null,true]}',
        b'{"Max":18446744073709551615,"Min":-9223372036854775808}',  # Go's uint64 and int64
        b'{"F":NaN}',  # not JSON, but json reads it, so nothing that parsed before fails now
        '{"Name":"caf\u00e9 \\u00e9 \\ud83d\\ude00"}'.encode(),
        b'{"Lone":"\\ud800"}',  # a lone surrogate: orjson refuses it
    ],
)
def test_decode_gives_what_json_gives(text):
    assert jsonbody.decode(text) == json.loads(text)


def test_decode_raises_valueerror_on_what_is_not_json():
    with pytest.raises(ValueError):
        jsonbody.decode(b"{not json")


@pytest.mark.parametrize(
    "value",
    [
        {"Id": "abc", "Names": ["/web"], "Ports": [], "Size": 1 << 62, "Ratio": 0.1},
        {"Big": 1 << 70},  # beyond 64 bits
        {1: "an int key"},  # json writes it as "1"
        ["caf\u00e9", "<&>", "\u2028"],
        ("a", "tuple"),
    ],
)
def test_encode_is_the_json_value_json_writes(value):
    assert json.loads(jsonbody.encode(value)) == json.loads(json.dumps(value))


def test_encode_is_compact():
    assert jsonbody.encode({"a": [1, {"b": None}]}) == b'{"a":[1,{"b":null}]}'


def test_encode_raises_typeerror_for_what_json_cannot_hold():
    with pytest.raises(TypeError):
        jsonbody.encode({"a": {1, 2}})


def test_strip_names_through_the_text_equals_the_walk():
    """scope.strip_names removes the project's suffix from every string and key through
    jsonbody.replaced; the same answer as the walk over the value, in the corners of JSON's
    text: escapes around the suffix, keys, nesting, non-ASCII, a suffix twice in a string."""
    end = names.suffix(PROJECT)
    value = {
        "Name": f"/web{end}",
        "Links": [f"/db{end}:/web{end}/db", "plain"],
        f"net{end}": {"Aliases": [f"web{end}", f'q"uote{end}\\', f"\n{end}\t"], "N": 1},
        "Env": [f"A=caf\u00e9{end}", f"\\{end}", f"\u0001{end}"],
        "Other": f"web.{names.tag('another')}",
        "Nums": [1, 2.5, None, True, 1 << 63],
    }
    walked = _walk(value, end)
    assert scope.strip_names(PROJECT, value) == walked
    assert walked["Name"] == "/web" and "net" in walked and walked["Other"].startswith("web.m")


def test_replaced_gives_a_fresh_copy():
    value = {"a": ["x"]}
    copied = jsonbody.replaced(value, ".mabc")
    assert copied == value and copied is not value and copied["a"] is not value["a"]


def test_strip_names_walks_what_orjson_cannot_write():
    end = names.suffix(PROJECT)
    assert scope.strip_names(PROJECT, {1: f"web{end}"}) == {1: "web"}
    assert scope.strip_names(PROJECT, f"web{end}") == "web"


def test_strip_names_keeps_what_is_not_a_json_type():
    """The text would carry a datetime as a string, a dataclass as a dict: the walk does those,
    leaving them as they are."""
    import dataclasses
    import datetime as dt

    @dataclasses.dataclass
    class Row:
        name: str

    end = names.suffix(PROJECT)
    when, row = dt.datetime(2025, 1, 1, 12, 0), Row(f"web{end}")
    out = scope.strip_names(PROJECT, {"Name": f"/web{end}", "At": when, "Row": row})
    assert out == {"Name": "/web", "At": when, "Row": row} and out["At"] is when


def _walk(value, end):
    if isinstance(value, str):
        return value.replace(end, "")
    if isinstance(value, dict):
        return {_walk(k, end): _walk(v, end) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, end) for v in value]
    return value
