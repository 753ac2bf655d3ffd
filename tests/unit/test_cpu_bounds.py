"""CPU spent on a tenant's input is bounded by construction: inputs_schema's patterns run on RE2
with bounded work, templates count shared structure by what a walk of it takes, and the issuer's
keys are fetched by one request at a time while the others go on with the keys in hand."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from workflows.domain.definition import WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.errors import DependencyUnavailable, Unauthenticated, ValidationFailed
from workflows.services.definitions import check_inputs
from workflows.services.inputs_schema import (
    MAX_PATTERN_PROGRAM,
    InputsTooCostly,
    SchemaRefused,
    input_errors,
    schema_problems,
)
from workflows.templating import LIMIT_CODE, MAX_VALUE_SIZE, render, render_value

# ---- inputs_schema ------------------------------------------------------------------------


def _property(**keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": keywords}}


@pytest.mark.parametrize(
    "pattern",
    [r"^(a+)\1$", r"^(?=a)a+$", r"(?<!b)a", r"(?P<x>a)(?P=x)"],
    ids=["backref", "ahead", "behind", "named"],
)
def test_a_pattern_re2_cannot_run_is_refused_naming_its_field(pattern: str) -> None:
    [(path, message)] = schema_problems(_property(type="string", pattern=pattern))
    assert path == ".properties.name.pattern"
    assert "RE2" in message


def test_a_pattern_whose_program_is_too_large_is_refused() -> None:
    [(path, message)] = schema_problems(_property(pattern="(?:.*a.{30}){1,30}c"))
    assert path == ".properties.name.pattern"
    assert f"at most {MAX_PATTERN_PROGRAM}" in message


def test_a_draft_4_pattern_properties_key_is_checked_too() -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "patternProperties": {"(?=x)": {}}}
    assert [path for path, _ in schema_problems(schema)] == [".patternProperties.(?=x)"]


def test_a_pattern_inside_enum_data_is_not_taken_for_a_schema() -> None:
    assert schema_problems({"enum": [{"pattern": r"(a)\1"}], "const": {"pattern": "(?=a)"}}) == []


def test_unevaluated_properties_beside_pattern_properties_is_refused() -> None:
    schema = {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    [(path, message)] = schema_problems(schema)
    assert path == ".unevaluatedProperties"
    assert "patternProperties" in message


def test_a_nested_quantifier_against_a_long_input_is_answered_with_its_error() -> None:
    errors = input_errors(_property(type="string", pattern="^(a+)+$"), {"name": "a" * 50_000 + "!"})
    assert [(list(e.absolute_path), e.message) for e in errors] == [
        (["name"], "does not match the pattern '^(a+)+$'")
    ]


def test_a_matching_input_passes() -> None:
    assert input_errors(_property(type="string", pattern="^(a+)+$"), {"name": "aaa"}) == []


def test_pattern_properties_and_additional_properties_match_with_re2() -> None:
    schema = {"patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": False}
    errors = input_errors(schema, {"x_a": "one", "x_b": 2, "y": 3})
    assert sorted(e.message for e in errors) == [
        "'one' is not of type 'integer'",
        "additional properties are not allowed ('y' unexpected)",
    ]


def test_matching_more_than_one_validations_share_is_refused() -> None:
    # A large program against a long string: linear, but a linear cost can still be large.
    schema = _property(type="string", pattern="^(?:[ab]*a[ab]{900}c)")
    with pytest.raises(InputsTooCostly, match="shorter strings"):
        input_errors(schema, {"name": "ab" * 30_000})


def test_references_that_multiply_keyword_evaluations_are_cut_off() -> None:
    defs: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(40)
    }
    defs["d40"] = {"type": "string"}
    with pytest.raises(InputsTooCostly, match="keyword evaluations"):
        input_errors({"$defs": defs, "$ref": "#/$defs/d0"}, 5)


def test_unique_items_keeps_jsonschema_equality() -> None:
    schema = _property(uniqueItems=True)
    assert input_errors(schema, {"name": [1, True, {"a": [1]}, {"a": [2]}]}) == []
    assert [e.message for e in input_errors(schema, {"name": [1, 1.0]})] == ["has non-unique elements"]
    assert [e.message for e in input_errors(schema, {"name": [{"a": 1}, {"a": 1.0}]})] == [
        "has non-unique elements"
    ]


def test_unique_items_on_many_distinct_objects_is_answered() -> None:
    assert input_errors(_property(uniqueItems=True), {"name": [{"a": i} for i in range(8000)]}) == []


def test_enum_keeps_jsonschema_equality() -> None:
    schema = _property(enum=[1, "a", {"b": [1]}])
    assert input_errors(schema, {"name": {"b": [1.0]}}) == []
    assert len(input_errors(schema, {"name": True})) == 1


def test_a_remote_reference_is_not_fetched() -> None:
    with pytest.raises(SchemaRefused, match="does not resolve"):
        input_errors({"$ref": "http://127.0.0.1:9/schema.json"}, 1)


def test_a_stored_schema_with_a_refused_pattern_answers_422_naming_it() -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "name": "old",
            "steps": [{"id": "s1", "type": "log", "config": {"message": "hi"}}],
            "inputs_schema": _property(pattern=r"(a)\1"),
        }
    )
    with pytest.raises(ValidationFailed) as refused:
        check_inputs(definition, {"name": "aa"})
    assert refused.value.details[0]["field"] == "inputs_schema.properties.name.pattern"


# ---- templates ----------------------------------------------------------------------------


def _limit(template: str) -> str:
    with pytest.raises(StepFailed) as failed:
        render(template, {})
    assert failed.value.code == LIMIT_CODE
    return str(failed.value)


DOUBLING = "{% set ns = namespace(a=[[]]) %}{% for i in range(40) %}{% set ns.a = MAKE %}{% endfor %}"


@pytest.mark.parametrize(
    "make",
    [
        "[ns.a, ns.a]",
        "(ns.a, ns.a)",
        '{"x": ns.a, "y": ns.a}',
        "dict(x=ns.a, y=ns.a)",
        "[ns.a] + [ns.a]",
        "[ns.a] * 2",
        "[ns.a, ns.a]|list",
        "[ns.a, ns.a]|batch(1)|list",
        "[ns.a, ns.a][:]|list",
    ],
)
def test_a_value_doubled_through_shared_parts_is_refused_as_it_grows(make: str) -> None:
    assert "counting a part" in _limit(DOUBLING.replace("MAKE", make))


WITHIN = DOUBLING.replace("[[]]", "()").replace("range(40)", "range(16)")  # about half the size


@pytest.mark.parametrize(
    ("make", "use", "output"),
    [
        ("[ns.a, ns.a]", "{{ ns.a == ns.a[:] }}", "true"),
        ("[ns.a, ns.a]", "{{ ns.a in [ns.a[:]] }}", "true"),
        ("[ns.a, ns.a]", "{{ ns.a|sort|length }}", "2"),
        ("(ns.a, ns.a)", "{{ {ns.a: 1}|length }}", "1"),
    ],
    ids=["compared", "contained", "sorted", "hashed"],
)
def test_a_value_within_the_size_is_compared_sorted_and_hashed(make: str, use: str, output: str) -> None:
    assert render(WITHIN.replace("MAKE", make) + use, {}) == output


@pytest.mark.parametrize("use", ["{{ ns.a|tojson }}", "{{ ns.a|string }}", "{{ ns.a }}"])
def test_a_value_within_the_size_is_refused_as_text_longer_than_a_string_may_be(use: str) -> None:
    assert "more than 262144 characters" in _limit(WITHIN.replace("MAKE", "[ns.a, ns.a]") + use)


def test_values_made_of_data_too_large_in_total_are_refused() -> None:
    big = ["x" * 1000] * 300  # a step output of about 300,000 characters
    with pytest.raises(StepFailed) as failed:
        render_value("{{ [items, items, items, items] }}", {"items": big})
    assert failed.value.code == LIMIT_CODE
    assert MAX_VALUE_SIZE < 4 * 300 * 1002


def test_ordinary_lists_tuples_and_objects_still_work() -> None:
    template = (
        "{% set ns = namespace(items=[]) %}{% for i in range(500) %}{% set ns.items = ns.items + [i] %}"
        "{% endfor %}{% for k, v in {'a': (1, 2)}.items() %}{{ k }}={{ v }}{% endfor %}"
        "{% set x, y = (1, 2) %}{{ x + y }} {{ ns.items|length }} {{ [[1, 2], {'a': [3]}] }}"
    )
    assert render(template, {}) == 'a=[1, 2]3 500 [[1, 2], {"a": [3]}]'


# ---- the issuer's keys --------------------------------------------------------------------


class HeldIssuer:
    """An issuer's documents, served by a fetch the test can hold while `hold` is set."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.hold = threading.Event()
        self.held = threading.Event()  # a fetch is waiting for `release`
        self.release = threading.Event()
        self.fetches: list[str] = []

    def fetch(self, url: str) -> dict[str, Any]:
        self.fetches.append(url)
        if self.hold.is_set():
            self.held.set()
            self.release.wait(30)
        if url.endswith("/.well-known/openid-configuration"):
            return {"jwks_uri": "https://idp.test/jwks.json"}
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}

    def token(self, kid: str = "k1") -> str:
        claims = {"iss": "https://idp.test", "sub": "jill", "exp": int(time.time()) + 300}
        signed: str = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": kid})
        return signed


class Ticking:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_while_one_request_refreshes_the_keys_the_others_use_the_keys_in_hand() -> None:
    from workflows.adapters.jwks import JwksTokenVerifier

    issuer = HeldIssuer()
    clock = Ticking()
    verifier = JwksTokenVerifier(issuer="https://idp.test", audiences=(), fetch=issuer.fetch, now=clock)
    assert verifier.verify(issuer.token())["sub"] == "jill"  # keys in hand
    clock.now += 61
    issuer.hold.set()
    refreshing: list[BaseException] = []

    def unknown_key() -> None:
        try:
            verifier.verify(issuer.token(kid="rotated"))
        except Unauthenticated as exc:
            refreshing.append(exc)

    thread = threading.Thread(target=unknown_key)
    thread.start()
    assert issuer.held.wait(30)  # the refresh is in flight, held by the test

    # Answered while it is held: with the keys in hand, and no second fetch started.
    assert verifier.verify(issuer.token())["sub"] == "jill"
    with pytest.raises(Unauthenticated):
        verifier.verify(issuer.token(kid="another"))
    fetches_while_held = len(issuer.fetches)

    issuer.release.set()
    thread.join(30)
    assert fetches_while_held == 3  # discovery and keys at first, then the held discovery
    assert len(refreshing) == 1


def test_with_no_keys_yet_a_request_answers_503_at_once_while_another_fetches() -> None:
    from workflows.adapters.jwks import JwksTokenVerifier

    issuer = HeldIssuer()
    verifier = JwksTokenVerifier(issuer="https://idp.test", audiences=(), fetch=issuer.fetch, now=Ticking())
    issuer.hold.set()
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(verifier.verify(issuer.token())))
    thread.start()
    assert issuer.held.wait(30)

    with pytest.raises(DependencyUnavailable):
        verifier.verify(issuer.token())

    issuer.release.set()
    thread.join(30)
    assert results[0]["sub"] == "jill"  # the fetching request itself got the keys
