"""RFC 7643/7644 compliance: python-scim's scim2-tester run in-process against the app."""

import pytest
from scim2_client.engines.wsgi import WSGISCIMClient
from scim2_tester import Status
from scim2_tester import check_server

from .conftest import issue_token


@pytest.mark.parametrize("custom_attributes", [False, True])
def test_scim2_tester_reports_only_success(app, runner, custom_attributes):
    if custom_attributes:
        runner.invoke(args=["attribute", "add", "badge", "--type", "integer"])
        runner.invoke(args=["attribute", "add", "site"])
    _, secret = issue_token(app, "generic")
    client = WSGISCIMClient(
        app,
        base_url="http://localhost/scim/v2",
        headers={"Authorization": f"Bearer {secret}"},
    )
    client.discover()
    results = check_server(client, raise_exceptions=False)
    failures = [
        f"{r.status.name} {r.title}: {r.reason}"
        for r in results
        if r.status is not Status.SUCCESS
    ]
    assert failures == []
    assert len(results) > 100
