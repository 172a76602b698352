"""The policy tester: the service (pasted documents, recorded attempts, AWS and instance
conditions through moto), its console page with permissions, and `verify_iid --aws/--attempt`.
Every test that runs it also checks that nothing was registered or recorded."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AdminAction
from joins import policy
from joins.aws import AwsError
from joins.models import Host, JoinAttempt
from joins.policy import FAIL, PASS, SKIPPED, evaluate_policy
from tests.joins.conftest import ACCOUNT, IMAGE_ID, LAUNCH, make_token

AT = LAUNCH + timedelta(seconds=40)


def states(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {check.name: check.state for check in report.checks}


@pytest.fixture
def untouched(db):  # type: ignore[no-untyped-def]
    """Asserts after the test that the tester wrote no host, attempt or admin action."""
    before = (Host.objects.count(), JoinAttempt.objects.count(), AdminAction.objects.count())
    yield
    after = (Host.objects.count(), JoinAttempt.objects.count(), AdminAction.objects.count())
    assert after == before


def test_a_pasted_document_passes_the_offline_checks_and_names_the_matching_rule(world, untouched):
    token = make_token(
        allow=[
            {"aws_account": "999999999999"},
            {"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]},
        ]
    )
    instance = world.launch()
    report = evaluate_policy(
        token=token.to_resource(), at=AT, document_text=world.document(instance)
    )
    assert states(report) == {
        "token": PASS,
        "join_method": PASS,
        "document": PASS,
        "pending_time": PASS,
        "allow_rule": PASS,
        "not_joined": PASS,
        "instance": SKIPPED,
    }
    assert report.ok and not report.complete and report.matched_rule == 1
    assert [(r.index, r.account_ok, r.chosen) for r in report.rules] == [
        (0, False, False),
        (1, True, True),
    ]
    assert "AWS checks did not run" in report.verdict


def test_it_reports_every_failure_and_gives_the_first_as_the_verdict(world, untouched):
    token = make_token(allow=[{"aws_account": "999999999999"}])
    report = evaluate_policy(
        token=token.to_resource(),
        at=LAUNCH + timedelta(hours=1),
        document_text=world.document(world.launch()),
    )
    assert states(report)["pending_time"] == FAIL and states(report)["allow_rule"] == FAIL
    assert report.first_failure.code == "iid_expired"
    assert report.verdict == "A join would be refused: Document too old (iid_expired)."
    assert not report.ok


def test_a_bad_signature_skips_everything_that_needs_the_document(world, untouched):
    from tests.support.iid_signer import tamper

    token = make_token()
    blob = tamper(world.document(world.launch()), 900)
    report = evaluate_policy(token=token.to_resource(), at=AT, document_text=blob)
    assert states(report)["document"] == FAIL
    assert [states(report)[n] for n in ("pending_time", "allow_rule", "instance")] == [SKIPPED] * 3


def test_asking_aws_reports_a_running_instance_and_allows(world, untouched):
    token = make_token()
    report = evaluate_policy(
        token=token.to_resource(), at=AT, ask_aws=True, document_text=world.document(world.launch())
    )
    assert states(report)["instance"] == PASS and report.instance_state == "running"
    assert report.ok and report.complete
    assert report.verdict == "A join would be allowed: every check passes."


def test_asking_aws_reports_a_stopped_instance_as_not_running(world, untouched):
    token = make_token()
    report = evaluate_policy(
        token=token.to_resource(),
        at=AT,
        ask_aws=True,
        document_text=world.document(world.launch(state="stopped")),
    )
    assert report.first_failure.code == "instance_not_running"
    assert report.instance_state == "stopped"


def test_an_aws_outage_is_a_failed_instance_check_with_its_code(world, monkeypatch, untouched):
    class Down:
        def describe(self, **_: object):  # type: ignore[no-untyped-def]
            raise AwsError("aws_unavailable", "ec2:DescribeInstances: throttled")

    monkeypatch.setattr(policy, "ec2_lookup", lambda: Down())
    token = make_token()
    report = evaluate_policy(
        token=token.to_resource(), at=AT, ask_aws=True, document_text=world.document(world.launch())
    )
    assert report.first_failure.name == "instance"
    assert report.first_failure.code == "aws_unavailable"


def test_every_instance_condition_is_reported_not_only_the_first_that_fails(world, untouched):
    token = make_token(
        allow=[
            {
                "aws_account": ACCOUNT,
                "aws_regions": ["us-west-2"],
                "aws_vpc_ids": ["vpc-0nope"],
                "aws_ami_ids": [IMAGE_ID],
                "aws_tags": {"team": ["web"]},
                "require_source_ip_match": True,
            }
        ]
    )
    report = evaluate_policy(
        token=token.to_resource(), at=AT, ask_aws=True, document_text=world.document(world.launch())
    )
    found = states(report)
    assert found["condition:aws_vpc_ids"] == FAIL
    assert found["condition:aws_ami_ids"] == PASS
    assert found["condition:aws_tags"] == FAIL
    assert found["condition:require_source_ip_match"] == SKIPPED
    assert report.first_failure.code == "instance_vpc_not_allowed"
    chosen = report.rules[0]
    assert [c.name for c in chosen.condition_checks][:2] == [
        "condition:aws_vpc_ids",
        "condition:aws_ami_ids",
    ]


def test_conditions_wait_for_aws_when_it_was_not_asked(world, untouched):
    token = make_token(allow=[{"aws_account": ACCOUNT, "aws_ami_ids": [IMAGE_ID]}])
    report = evaluate_policy(
        token=token.to_resource(), at=AT, document_text=world.document(world.launch())
    )
    assert states(report)["condition:aws_ami_ids"] == SKIPPED


def _recorded(world, instance, **fields):  # type: ignore[no-untyped-def]
    from joins.iid import verify_document
    from joins.trust import certificate_store

    document = verify_document(world.document(instance), certificate_store())
    return JoinAttempt.objects.create(
        time=AT,
        outcome="denied",
        error="no_matching_rule",
        host_id=document.host_id,
        document=document.raw,
        remote_addr="10.0.0.9",
        **fields,
    )


def test_a_recorded_attempt_is_rechecked_from_its_fields(world):
    attempt = _recorded(world, world.launch())
    token = make_token()
    count = JoinAttempt.objects.count()
    report = evaluate_policy(token=token.to_resource(), at=AT, attempt=attempt)
    document_check = report.checks[2]
    assert document_check.state == PASS
    assert f"verified when attempt #{attempt.pk} was received" in document_check.detail
    assert report.matched_rule == 0 and report.ok
    assert JoinAttempt.objects.count() == count


def test_an_attempt_without_a_verified_document_says_so(world):
    attempt = JoinAttempt.objects.create(time=AT, outcome="denied", error="iid_signature_invalid")
    report = evaluate_policy(token=make_token().to_resource(), at=AT, attempt=attempt)
    assert report.first_failure.name == "document"
    assert report.first_failure.code == "iid_signature_invalid"


def test_an_already_registered_host_fails_not_joined_and_a_retired_one_says_why(world):
    instance = world.launch(state="terminated")
    Host.objects.create(
        host_id=instance.host_id,
        account_id=ACCOUNT,
        region="us-west-2",
        instance_id=instance.instance_id,
        token="ec2-token",
        first_joined_at=AT,
        last_joined_at=AT,
        retired_at=AT,
        aws_state="terminated",
    )
    report = evaluate_policy(
        token=make_token().to_resource(), at=AT, document_text=world.document(instance)
    )
    assert report.first_failure.code == "instance_already_joined"
    assert "never reused" in report.first_failure.detail


def test_exactly_one_of_document_and_attempt_is_required(world):
    token = make_token().to_resource()
    with pytest.raises(ValueError):
        evaluate_policy(token=token, at=AT)


# --- the console page -------------------------------------------------------------------------

URL = "/tools/policy-tester/"


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_the_login_page_from_the_tester(client: Client):
    for response in (client.get(URL), client.post(URL, {"token": "x"})):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_users_without_a_role_get_a_403_from_the_tester(plain_client: Client):
    assert plain_client.get(URL).status_code == 403
    assert plain_client.post(URL, {"token": "x"}).status_code == 403


@pytest.mark.django_db
def test_auditors_and_admins_open_the_tester(auditor_client: Client, admin_client: Client):
    make_token()
    for client in (auditor_client, admin_client):
        html = client.get(URL).content.decode()
        assert '<option value="ec2-token">' in html and 'name="document"' in html


def test_an_auditor_tests_a_pasted_document_in_the_console(
    auditor_client, world, at_launch, untouched
):
    make_token()
    response = auditor_client.post(
        URL, {"token": "ec2-token", "document": world.document(world.launch()), "ask_aws": "on"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "A join would be allowed: every check passes." in html
    assert 'data-check="instance" data-state="pass"' in html
    assert "used by a join" in html


def test_the_tester_refuses_both_or_neither_input_and_unknown_attempts(auditor_client, world):
    make_token()
    both = auditor_client.post(URL, {"token": "ec2-token", "document": "x", "attempt": "1"})
    assert "not both" in both.content.decode()
    neither = auditor_client.post(URL, {"token": "ec2-token"})
    assert "Paste a document or give a join attempt number" in neither.content.decode()
    unknown = auditor_client.post(URL, {"token": "ec2-token", "attempt": "987654"})
    assert "There is no join attempt #987654" in unknown.content.decode()
    assert "Result" not in unknown.content.decode()


def test_an_attempt_link_prefills_the_form_with_its_token_and_time(auditor_client, world):
    make_token()
    attempt = _recorded(world, world.launch(), token="ec2-token")
    html = auditor_client.get(f"{URL}?attempt={attempt.pk}").content.decode()
    assert f'name="attempt" value="{attempt.pk}"' in html
    assert '<option value="ec2-token" selected>' in html
    assert f'value="{AT:%Y-%m-%dT%H:%M:%S}"' in html
    detail = auditor_client.get(f"/joins/{attempt.pk}/").content.decode()
    assert f'href="/tools/policy-tester/?attempt={attempt.pk}"' in detail


def test_the_attempt_is_tested_at_its_own_time_by_default(auditor_client, world):
    make_token()
    attempt = _recorded(world, world.launch(), token="ec2-token")
    html = auditor_client.post(URL, {"token": "ec2-token", "attempt": attempt.pk}).content.decode()
    assert f"join attempt #{attempt.pk}" in html
    assert 'data-check="pending_time" data-state="pass"' in html


# --- verify_iid ---------------------------------------------------------------------------------


def verify(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("verify_iid", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(out.getvalue())


def test_verify_iid_with_aws_reports_the_instance_state(world, tmp_path, untouched):
    make_token()
    path = tmp_path / "doc.b64"
    path.write_text(world.document(world.launch(state="stopped")))
    code, result = verify(str(path), "--token", "ec2-token", "--at", AT.isoformat(), "--aws")
    assert code == 1 and result["error"] == "instance_not_running"
    assert result["instance_state"] == "stopped" and result["complete"] is True
    assert [r["chosen"] for r in result["rules"]] == [True]


def test_verify_iid_rechecks_a_recorded_attempt(world):
    make_token()
    attempt = _recorded(world, world.launch())
    code, result = verify("--attempt", str(attempt.pk), "--token", "ec2-token")
    assert code == 0 and result["ok"] is True and result["complete"] is False
    assert result["source"] == f"join attempt #{attempt.pk}"
    with pytest.raises(CommandError, match="need --token"):
        verify("--attempt", str(attempt.pk))
    with pytest.raises(CommandError, match="no join attempt"):
        verify("--attempt", "999999", "--token", "ec2-token")


def test_asking_aws_from_the_tester_is_rate_limited_per_user(auditor_client, world, monkeypatch):
    from joins import policy_views, ratelimit

    monkeypatch.setattr(policy_views, "AWS_LOOKUP_RATE", ratelimit.Rate(count=1, period=3600))
    make_token()
    form = {
        "token": "ec2-token",
        "document": world.document(world.launch()),
        "ask_aws": "on",
        "at": AT.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    first = auditor_client.post(URL, form).content.decode()
    assert 'data-check="instance" data-state="pass"' in first
    second = auditor_client.post(URL, form).content.decode()
    assert "Too many AWS lookups from the tester" in second and "data-check=" not in second
    offline = auditor_client.post(URL, {**form, "ask_aws": ""}).content.decode()
    assert 'data-check="instance" data-state="skipped"' in offline
