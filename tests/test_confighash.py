"""The config hash must equal the reference's, byte for byte, or every member the reference
created would be replaced by a needless rolling update."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from infrakit.plugins.group.confighash import config_hash, go_indent_json, go_number

INSTANCE = {"Plugin": "instance-file",
            "Properties": {"Note": "Instance properties version 1.0"}}
FLAVOR = {"Plugin": "flavor-vanilla",
          "Properties": {"Init": ["echo hello"], "Tags": {"tier": "web", "project": "infrakit"}}}


def test_spi_test_vector() -> None:
    assert config_hash(INSTANCE, FLAVOR) == "6drwciyinzycumf3x2pkfcc6wzmg2wna"


def test_hash_changes_with_any_property_and_ignores_key_order() -> None:
    reordered = {"Properties": {"Tags": {"project": "infrakit", "tier": "web"},
                                "Init": ["echo hello"]}, "Plugin": "flavor-vanilla"}
    assert config_hash(INSTANCE, reordered) == config_hash(INSTANCE, FLAVOR)
    changed = {**INSTANCE, "Properties": {"Note": "Instance properties version 1.1"}}
    assert config_hash(changed, FLAVOR) != config_hash(INSTANCE, FLAVOR)
    # the blocks are hashed in order: swapping them changes the hash
    assert config_hash(FLAVOR, INSTANCE) != config_hash(INSTANCE, FLAVOR)


def _samples() -> list[dict[str, Any]]:
    env = os.environ.get("INFRAKIT_WIRE_SAMPLES")
    path = Path(env) if env else (Path(__file__).resolve().parents[2] / "shared" / "wire"
                                  / "infrakit-v0.5-samples.json")
    if not path.exists():
        pytest.skip(f"wire samples not found at {path}")
    return list(json.loads(path.read_text()))


def test_hash_of_every_committed_sample_spec_matches_the_tags_the_reference_wrote() -> None:
    samples = _samples()
    commits = [e["request"]["params"]["Spec"] for e in samples
               if e["request"]["method"] == "Group.CommitGroup" and e["request"]["params"]]
    tags = {d["Tags"]["infrakit.config_sha"] for e in samples
            if e["request"]["method"] == "Group.DescribeGroup" and "result" in e["response"]
            for d in e["response"]["result"]["Description"]["Instances"]}
    assert commits and tags
    for spec in commits:
        props = spec["Properties"]
        assert config_hash(props["Instance"], props["Flavor"]) in tags


def test_go_indent_layout() -> None:
    text = go_indent_json({"b": [1, {"c": None}], "a": {}, "d": []})
    assert text == ('{\n    "a": {},\n    "b": [\n      1,\n      {\n        "c": null\n'
                    '      }\n    ],\n    "d": []\n  }')


@pytest.mark.parametrize(("value", "expected"), [
    (1.0, "1"), (1, "1"), (100.0, "100"), (1.5, "1.5"), (0.1, "0.1"), (0.0, "0"),
    (-0.0, "-0"), (1e20, "100000000000000000000"), (1e21, "1e+21"), (1.5e22, "1.5e+22"),
    (1e-6, "0.000001"), (1e-7, "1e-7"), (-2.5e-8, "-2.5e-8"), (1e-10, "1e-10"),
    (123456789012345678, "123456789012345680"),
])
def test_numbers_print_as_go_prints_a_float64(value: float, expected: str) -> None:
    assert go_number(value) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("<a&b>", '"\\u003ca\\u0026b\\u003e"'),
    ("tab\tnl\ncr\r", '"tab\\tnl\\ncr\\r"'),
    ("\b\f\x01", '"\\u0008\\u000c\\u0001"'),
    ('q"b\\', '"q\\"b\\\\"'),
    ("é ü 中", '"é ü 中"'),
    ("\u2028\u2029", '"\\u2028\\u2029"'),
])
def test_strings_are_escaped_as_go_escapes_them(text: str, expected: str) -> None:
    assert go_indent_json(text) == expected


def test_non_json_values_are_refused() -> None:
    with pytest.raises(ValueError):
        go_number(float("nan"))
    with pytest.raises(TypeError):
        go_indent_json({"a": object()})
