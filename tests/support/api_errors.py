"""The one check of the error shape every 4xx of the master and the slave must have."""


def assert_error_shape(response, status=None, field=None, code=None):
    """A Flask test response is ``{"error", "message", "fields"}`` with ``status``, or any 4xx
    when no status is given; returns the body.

    ``field`` (must be named in ``fields``) and ``code`` (the ``error``) are checked when given.
    """
    text = response.get_data(as_text=True)
    if status is None:
        assert 400 <= response.status_code < 500, (response.status_code, text)
    else:
        assert response.status_code == status, text
    body = response.get_json()
    assert isinstance(body, dict), text
    assert set(body) == {"error", "message", "fields"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["fields"], dict)
    assert "Traceback" not in text
    if field is not None:
        assert field in body["fields"], body
    if code is not None:
        assert body["error"] == code, body
    return body
