"""Security headers on every answer of the master and the slave, pages and API alike.

Set with ``setdefault``, so a page that needs a looser policy (the master's
API docs start Swagger UI with an inline script) sets its own first.
"""

# Everything from this origin only; no plugin, no <base>, no framing by any site.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def install_security_headers(app):
    """Register the headers on ``app``; call it before blueprints register their own hooks."""
    app.after_request(add_security_headers)
