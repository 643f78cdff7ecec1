"""The pure pieces on their own: qualification rules, money, question parsing, the shape checker,
and the boundary that keeps the marketplace a separate service."""
from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

from crowd.marketplace import errors, money, qualifications, questions, shapes
from crowd.marketplace.qualifications import LOCALE, Locale, allowed_actions, meets

MARKETPLACE = Path(__file__).resolve().parents[2] / "crowd" / "marketplace"


def test_the_marketplace_imports_nothing_from_the_rest_of_the_platform():
    for path in MARKETPLACE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("datasets", "frontend")), f"{path}: imports {name}"
                if name.startswith("crowd"):
                    assert name.startswith("crowd.marketplace"), f"{path}: imports {name}"


@pytest.mark.parametrize("comparator,values,worker,expected", [
    ("GreaterThan", [5], 6, True), ("GreaterThan", [5], 5, False),
    ("GreaterThanOrEqualTo", [5], 5, True), ("LessThan", [5], 4, True), ("LessThanOrEqualTo", [5], 6, False),
    ("EqualTo", [3], 3, True), ("NotEqualTo", [3], 3, False), ("In", [1, 2, 3], 2, True),
    ("NotIn", [1, 2, 3], 4, True), ("Exists", [], 0, True), ("Exists", [], None, False),
    ("DoesNotExist", [], None, True), ("DoesNotExist", [], 1, False), ("GreaterThan", [0], None, False),
])
def test_integer_comparators(comparator, values, worker, expected):
    assert meets({"Comparator": comparator, "IntegerValues": values}, worker) is expected


def test_locale_comparators():
    ca = Locale("US", "CA")
    assert meets({"Comparator": "EqualTo", "LocaleValues": [{"Country": "US"}]}, ca)
    assert meets({"Comparator": "EqualTo", "LocaleValues": [{"Country": "US", "Subdivision": "CA"}]}, ca)
    assert not meets({"Comparator": "EqualTo", "LocaleValues": [{"Country": "US", "Subdivision": "NY"}]}, ca)
    assert meets({"Comparator": "NotIn", "LocaleValues": [{"Country": "DE"}, {"Country": "FR"}]}, ca)
    assert not meets({"Comparator": "In", "LocaleValues": [{"Country": "DE"}]}, ca)


def test_actions_guarded_nest():
    q = "Q" * 30
    need = lambda guard: [{"QualificationTypeId": q, "Comparator": "Exists", "ActionsGuarded": guard}]  # noqa: E731
    assert allowed_actions(need("Accept"), {}) == {"Discover", "Preview"}
    assert allowed_actions(need("PreviewAndAccept"), {}) == {"Discover"}
    assert allowed_actions(need("DiscoverPreviewAndAccept"), {}) == set()
    assert allowed_actions(need("DiscoverPreviewAndAccept"), {q: 1}) == {"Discover", "Preview", "Accept"}


def test_requirements_are_checked_when_a_hit_type_is_made():
    with pytest.raises(errors.RequestError):
        qualifications.normalize([{"QualificationTypeId": "UNKNOWN", "Comparator": "Exists"}], known_type_ids=set())
    with pytest.raises(errors.RequestError):
        qualifications.normalize([{"QualificationTypeId": LOCALE, "Comparator": "Exists",
                                   "ActionsGuarded": "Accept", "RequiredToPreview": True}], known_type_ids=set())
    out = qualifications.normalize([{"QualificationTypeId": LOCALE, "Comparator": "EqualTo",
                                     "LocaleValues": [{"Country": "US"}], "RequiredToPreview": True}],
                                   known_type_ids=set())
    assert out == [{"QualificationTypeId": LOCALE, "Comparator": "EqualTo", "ActionsGuarded": "PreviewAndAccept",
                    "LocaleValues": [{"Country": "US"}]}]


def test_commission_like_mturk():
    assert money.commission(Decimal("0.05")) == Decimal("0.01")  # 20% is $0.01
    assert money.commission(Decimal("0.01")) == Decimal("0.01")  # the minimum
    assert money.commission(Decimal("1.00")) == Decimal("0.20")
    assert money.commission(Decimal("1.00"), max_assignments=10) == Decimal("0.40")
    assert money.cost_per_assignment(Decimal("0.50"), 3) == Decimal("0.60")
    assert money.parse_amount("5", field="BonusAmount") == Decimal("5.00")
    for bad in ("$1", "1.001", "-1", "1e3", "", " "):
        with pytest.raises(errors.RequestError):
            money.parse_amount(bad, field="Reward")


def test_question_parsing(settings):
    settings.MARKETPLACE_ALLOW_HTTP_LOOPBACK = False
    settings.DEBUG = False
    ext = ('<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/'
           'ExternalQuestion.xsd"><ExternalURL>{}</ExternalURL><FrameHeight>450</FrameHeight></ExternalQuestion>')
    parsed = questions.parse(ext.format("https://tasks.example.org/t?x=1&amp;y=2"))
    assert parsed.kind == "ExternalQuestion" and parsed.external_url == "https://tasks.example.org/t?x=1&y=2"
    assert parsed.frame_height == 450
    for url in ("http://tasks.example.org/", "http://127.0.0.1:8000/", "javascript:alert(1)", "/relative"):
        with pytest.raises(errors.RequestError):
            questions.parse(ext.format(url))
    settings.MARKETPLACE_ALLOW_HTTP_LOOPBACK = True
    assert questions.parse(ext.format("http://127.0.0.1:8000/t")).external_url == "http://127.0.0.1:8000/t"
    assert questions.parse(ext.format("http://[::1]:8000/t")).kind == "ExternalQuestion"
    with pytest.raises(errors.RequestError):
        questions.parse(ext.format("http://10.0.0.1/t"))  # private, not loopback
    with pytest.raises(errors.RequestError):
        questions.parse(ext.replace("2006-07-14", "1999-01-01").format("https://a.example/"))
    with pytest.raises(errors.RequestError):
        questions.parse("<QuestionForm xmlns='x'/>")


def test_shape_checker_speaks_like_aws():
    op = shapes.operation("CreateHIT")
    problems = shapes.validate(op.input_shape, {"Title": "", "MaxAssignments": True, "Reward": "x",
                                                "LifetimeInSeconds": 60, "AssignmentDurationInSeconds": 60,
                                                "Description": "d"})
    assert "Value 'x' at 'reward' failed to satisfy constraint: Member must satisfy regular expression pattern" \
           in " ".join(problems)
    assert any("'maxAssignments'" in p and "integer" in p for p in problems)
    assert shapes.summarize(problems).startswith(f"{len(problems)} validation errors detected: ")
    out = shapes.operation("GetAccountBalance").output_shape
    assert shapes.validate(out, {"AvailableBalance": "1.00"}) == []
    assert shapes.validate(out, {"AvailableBalance": 1}) != []
    hit = shapes.operation("GetHIT").output_shape
    assert any("HITStatus" in p or "hITStatus" in p or "enum" in p
               for p in shapes.validate(hit, {"HIT": {"HITStatus": "Sleeping"}}))


def test_html_question_may_carry_its_own_doctype_but_the_xml_may_not():
    html = ('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/'
            'HTMLQuestion.xsd"><HTMLContent><![CDATA[<!DOCTYPE html><p>hi</p>]]></HTMLContent>'
            '<FrameHeight>0</FrameHeight></HTMLQuestion>')
    assert questions.parse(html).html_content == "<!DOCTYPE html><p>hi</p>"
    for prolog in ('<!DOCTYPE q [<!ENTITY a "b">]>', '<?xml version="1.0"?>\n<!-- c -->\n<!doctype q>'):
        with pytest.raises(errors.RequestError):
            questions.parse(prolog + html)
