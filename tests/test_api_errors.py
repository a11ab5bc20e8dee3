"""The error boundary: an unsettled claim is a 503 problem, never a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient

from noclash.api.app import create_app
from noclash.unique import ClaimNotSettled


def test_claim_not_settled_is_a_503_problem(engine):
    app = create_app(engine=engine)

    @app.get("/_test/unsettled")
    def unsettled() -> None:
        raise ClaimNotSettled("the active conversation kept closing")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/_test/unsettled")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 503 and "retry" in body["detail"]
    assert "Traceback" not in response.text
