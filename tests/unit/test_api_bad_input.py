"""Bad input to the projects API: every writable field refused with a 4xx that names it.

For each case: a 4xx (never a 500) in the error shape, the offending field
named in ``fields``, nothing stored, and no rsync started. Accepted-value
tables prove the validators do not refuse what a mirror admin needs.

The field tables share one app per module (hundreds of cases); each test
leaves it as it found it. Request-level tests use the per-test ``app``.
"""

import pytest

from common.clock import FakeClock
from master.schemas import MAX_TIMEOUT
from tests.support.fakes import FakeRsyncRunner
from tests.support.api_errors import assert_error_shape

PROJECTS = "/api/v1/projects"
TABLE_TOKEN = "table-admin-token"
TABLE_ADMIN = {"Authorization": f"Bearer {TABLE_TOKEN}"}
EXISTING = {
    "name": "existing",
    "upstream": "rsync://mirror.example.org/debian",
    "schedule": "0 */6 * * *",
    "enabled": True,
    "rsync_options": ["--bwlimit=1000"],
    "excludes": ["*.iso"],
    "timeout": 3600,
    "upstream_password": "baseline-secret",
    "description": "The universal operating system",
    "help_url": "https://mirrors.example.org/help/debian/",
    "public_path": "/debian/",
}
PATCHABLE = ("upstream", "schedule", "enabled", "rsync_options", "excludes", "timeout", "upstream_password",
             "description", "help_url", "public_path")

def refused(case_id, value):
    return case_id, value


def accepted(case_id, value):
    return case_id, value


REFUSED = {
    "description": [
        refused("wrong-type-int", 5),
        refused("wrong-type-list", ["text"]),
        refused("empty", ""),
        refused("only-spaces", "   "),
        refused("leading-space", " Debian"),
        refused("range-201-chars", "a" * 201),
        refused("oversized", "a" * 10_000),
        refused("newline", "Debian\nGNU"),
        refused("nul", "Debian\x00"),
        refused("escape", "\x1b[31mred"),
        refused("bidi-override", "Debian \u202egnp.exe"),
        refused("line-separator", "a\u2028b"),
        refused("zero-width", "De\u200bbian"),
    ],
    "help_url": [
        refused("wrong-type-int", 5),
        refused("empty", ""),
        refused("javascript", "javascript:alert(1)"),
        refused("data", "data:text/html,<script>alert(1)</script>"),
        refused("ftp", "ftp://mirrors.example.org/help"),
        refused("no-scheme", "mirrors.example.org/help"),
        refused("protocol-relative", "//evil.example.org/help"),
        refused("user", "https://user:pw@mirrors.example.org/help"),
        refused("at-sign", "https://mirrors.example.org@evil.example.org/"),
        refused("bad-port", "https://mirrors.example.org:99999/"),
        refused("quote", 'https://mirrors.example.org/"onmouseover="alert(1)'),
        refused("angle", "https://mirrors.example.org/<script>"),
        refused("space", "https://mirrors.example.org/help me"),
        refused("backslash", "https://mirrors.example.org\\@evil.example.org/"),
        refused("newline", "https://mirrors.example.org/\nhelp"),
        refused("cyrillic-host", "https://mirrors.\u0435xample.org/"),
        refused("host-underscore", "https://mir_rors.example.org/"),
        refused("oversized", "https://mirrors.example.org/" + "a" * 600),
    ],
    "public_path": [
        refused("wrong-type-int", 5),
        refused("empty", ""),
        refused("relative", "debian"),
        refused("protocol-relative", "//evil.example.org/debian"),
        refused("double-slash", "/pub//debian"),
        refused("dot-dot", "/pub/../etc"),
        refused("dot-segment", "/./debian"),
        refused("hidden", "/.mirrorsync"),
        refused("url", "https://evil.example.org/debian"),
        refused("query", "/debian?x=1"),
        refused("fragment", "/debian#x"),
        refused("quote", '/debian"onclick'),
        refused("backslash", "/debian\\..\\x"),
        refused("space", "/deb ian"),
        refused("percent", "/deb%2e%2e"),
        refused("nul", "/debian\x00"),
        refused("fullwidth", "/ｄebian"),
        refused("oversized", "/" + "a" * 300),
    ],
    "name": [
        refused("wrong-type-int", 42),
        refused("wrong-type-list", ["debian"]),
        refused("wrong-type-bool", True),
        refused("null", None),
        refused("empty", ""),
        refused("format-uppercase", "Debian"),
        refused("format-space", "deb ian"),
        refused("format-slash", "deb/ian"),
        refused("format-leading-underscore", "_debian"),
        refused("range-64-chars", "a" * 64),
        refused("oversized", "a" * 10_000),
        refused("leading-dash", "-debian"),
        refused("leading-double-dash", "--rsh=sh"),
        refused("state-dir", ".mirrorsync"),
        refused("dot-dot", ".."),
        refused("dot-dot-inside", "deb..ian"),
        refused("nul", "deb\x00ian"),
        refused("newline", "debian\n"),
        refused("shell-semicolon", "debian;reboot"),
        refused("shell-pipe", "debian|sh"),
        refused("shell-ampersand", "debian&"),
        refused("shell-dollar-paren", "$(reboot)"),
        refused("shell-backtick", "`reboot`"),
        refused("host-module", "evil::mod"),
        refused("rsync-url", "rsync://evil::mod"),
        refused("fullwidth", "ｄｅｂｉａｎ"),
        refused("cyrillic-e", "d\u0435bian"),
    ],
    "upstream": [
        refused("wrong-type-int", 873),
        refused("ipv4-out-of-range", "rsync://999.2.3.4/debian"),
        refused("wrong-type-list", ["rsync://mirror.example.org/debian"]),
        refused("wrong-type-object", {"host": "mirror.example.org"}),
        refused("null", None),
        refused("empty", ""),
        refused("format-http-scheme", "http://mirror.example.org/debian"),
        refused("format-uppercase-scheme", "RSYNC://mirror.example.org/debian"),
        refused("format-ssh-style", "mirror.example.org:/srv/debian"),
        refused("format-no-module", "rsync://mirror.example.org/"),
        refused("format-no-host", "rsync:///debian"),
        refused("format-port-not-number", "rsync://mirror.example.org:ssh/debian"),
        refused("format-two-ports", "rsync://mirror.example.org:873:874/debian"),
        refused("format-query", "rsync://mirror.example.org/debian?x=1"),
        refused("format-fragment", "rsync://mirror.example.org/debian#x"),
        refused("format-space-in-host", "rsync://mirror example.org/debian"),
        refused("format-backslash", "rsync://mirror.example.org/debian\\..\\etc"),
        refused("range-port-zero", "rsync://mirror.example.org:0/debian"),
        refused("range-port-65536", "rsync://mirror.example.org:65536/debian"),
        refused("range-path-segment-256", "rsync://mirror.example.org/debian/" + "a" * 256),
        refused("oversized", "rsync://mirror.example.org/debian/" + "/".join(["a" * 100] * 10)),
        refused("host-module-bare", "evil::mod"),
        refused("host-module-in-url", "rsync://evil::mod"),
        refused("host-module-in-module", "rsync://mirror.example.org/debian::x"),
        refused("host-module-in-path", "rsync://mirror.example.org/debian/x::y"),
        refused("user-password", "rsync://anon:hunter2@mirror.example.org/debian"),
        refused("user-leading-dash", "rsync://-e@mirror.example.org/debian"),
        refused("host-leading-dash", "rsync://-oProxyCommand=sh/debian"),
        refused("module-leading-dash", "rsync://mirror.example.org/--rsh=sh"),
        refused("path-leading-dash", "rsync://mirror.example.org/debian/-e"),
        refused("dot-dot", "rsync://mirror.example.org/debian/../../etc"),
        refused("dot-segment", "rsync://mirror.example.org/debian/./x"),
        refused("nul", "rsync://mirror.example.org/deb\x00ian"),
        refused("newline", "rsync://mirror.example.org/debian\n--rsh=sh"),
        refused("shell-semicolon", "rsync://mirror.example.org/debian;reboot"),
        refused("shell-pipe", "rsync://mirror.example.org/debian/a|sh"),
        refused("shell-ampersand", "rsync://mirror.example.org/debian/a&b"),
        refused("shell-dollar-paren", "rsync://mirror.example.org/debian/$(reboot)"),
        refused("shell-backtick", "rsync://mirror.example.org/debian/`reboot`"),
        refused("fullwidth-scheme", "ｒｓｙｎｃ://mirror.example.org/debian"),
        refused("cyrillic-host", "rsync://mirror.\u0435xample.org/debian"),
        refused("ipv6-unclosed-bracket", "rsync://[::1/debian"),
        refused("ipv6-bracket-not-an-address", "rsync://[evil]/debian"),
        refused("ipv6-zone-shell", "rsync://[fe80::1%;reboot]/debian"),
        refused("ipv6-zone-flag", "rsync://[fe80::1%-e]/debian"),
    ],
    "schedule": [
        refused("wrong-type-int", 5),
        refused("wrong-type-list", ["0", "3", "*", "*", "*"]),
        refused("wrong-type-bool", True),
        refused("empty", ""),
        refused("format-four-fields", "0 3 * *"),
        refused("format-six-fields", "0 0 3 * * *"),
        refused("never-fires", "0 0 31 2 *"),
        refused("format-macro", "@daily"),
        refused("format-quartz-question-mark", "0 0 ? * *"),
        refused("range-minute-60", "60 * * * *"),
        refused("range-hour-24", "0 24 * * *"),
        refused("range-day-0", "0 0 0 * *"),
        refused("range-day-32", "0 0 32 * *"),
        refused("range-month-13", "0 0 * 13 *"),
        refused("range-weekday-8", "0 0 * * 8"),
        refused("range-reversed", "0 0 * * 5-1"),
        refused("range-zero-step", "*/0 * * * *"),
        refused("leading-dash", "-1 * * * *"),
        refused("oversized", "0 3 * * " + ",".join(["1"] * 100)),
        refused("nul", "0 3 * * *\x00"),
        refused("newline", "0 3 * * *\n0 4 * * *"),
        refused("dot-dot", "0 3 * * .."),
        refused("shell-semicolon", "0 3 * * 1;reboot"),
        refused("shell-pipe", "0 3 * * *|sh"),
        refused("shell-ampersand", "0 3 * * 1&"),
        refused("shell-dollar-paren", "$(reboot) * * * *"),
        refused("shell-backtick", "`reboot` * * * *"),
        refused("host-module", "evil::mod * * * *"),
        refused("fullwidth-digits", "０ ３ * * *"),
        refused("arabic-indic-digits", "\u0660 \u0663 * * *"),
    ],
    "enabled": [
        refused("wrong-type-string-true", "true"),
        refused("wrong-type-string-yes", "yes"),
        refused("wrong-type-string-on", "on"),
        refused("wrong-type-list", [True]),
        refused("wrong-type-object", {"value": True}),
        refused("null", None),
        refused("wrong-type-int-1", 1),
        refused("wrong-type-int-0", 0),
        refused("range-int-2", 2),
        refused("leading-dash", "-e"),
        refused("shell-semicolon", "true;reboot"),
    ],
    "rsync_options": [
        refused("wrong-type-string", "--checksum"),
        refused("wrong-type-object", {"--bwlimit": 1000}),
        refused("wrong-type-item-int", [1000]),
        refused("wrong-type-item-null", [None]),
        refused("wrong-type-item-list", [["--checksum"]]),
        refused("null", None),
        refused("bare-word", ["checksum"]),
        refused("bare-word-program", ["ssh"]),
        refused("bare-word-path", ["/etc/shadow"]),
        refused("empty-item", [""]),
        refused("leading-space", [" --checksum"]),
        refused("trailing-space", ["--checksum "]),
        refused("unknown-option", ["--no-such-option"]),
        refused("uppercase", ["--CHECKSUM"]),
        refused("short-option-cluster", ["-essh"]),
        refused("valued-option-without-value", ["--bwlimit"]),
        refused("flag-with-value", ["--checksum=yes"]),
        refused("split-valued-option", ["--bwlimit", "1000"]),
        refused("split-exclude", ["--exclude", "*.iso"]),
        refused("split-rsh", ["-e", "ssh"]),
        refused("split-password-file", ["--password-file", "/etc/shadow"]),
        refused("split-rsync-path", ["--rsync-path", "x"]),
        refused("split-log-file", ["--log-file", "/tmp/x"]),
        refused("two-options-one-item", ["--timeout=600 --rsh=sh"]),
        refused("range-max-delete-negative", ["--max-delete=-1"]),
        refused("range-timeout-11-digits", ["--timeout=99999999999"]),
        refused("range-bwlimit-negative", ["--bwlimit=-5"]),
        refused("format-bwlimit-exponent", ["--bwlimit=1e9"]),
        refused("format-timeout-empty", ["--timeout="]),
        refused("format-exclude-empty", ["--exclude="]),
        refused("too-many-items", ["--checksum"] * 33),
        refused("oversized-item", ["--exclude=" + "a" * 400]),
        refused("exclude-leading-dash", ["--exclude=-e"]),
        refused("exclude-rule-prefix", ["--exclude=+ /etc"]),
        refused("dot-dot-value", ["--max-size=../1G"]),
        refused("nul", ["--checksum\x00-e"]),
        refused("newline", ["--exclude=*.iso\n--rsh=sh"]),
        refused("tab", ["--no-motd\t"]),
        refused("shell-semicolon", ["--bwlimit=1000;reboot"]),
        refused("shell-pipe", ["--bwlimit=1000|sh"]),
        refused("shell-ampersand", ["--max-delete=1&"]),
        refused("shell-dollar-paren", ["--timeout=$(reboot)"]),
        refused("shell-backtick", ["--contimeout=`reboot`"]),
        refused("host-module-bare", ["evil::mod"]),
        refused("host-module-url", ["rsync://evil::mod"]),
        refused("fullwidth", ["－－checksum"]),
        refused("cyrillic-c", ["--\u0441hecksum"]),
        refused("unicode-minus", ["\u2212\u2212checksum"]),
        refused("fullwidth-digits-value", ["--bwlimit=１０００"]),
    ] + [
        refused(f"forbidden{option}", [option]) for option in (
            "-e", "-e=ssh", "--rsh", "--rsh=ssh", "--rsh=", "--rsync-path=x", "--password-file=/etc/shadow",
            "--log-file=/tmp/x", "--log-file-format=%f", "--files-from=x", "--include-from=x",
            "--exclude-from=x", "--filter=merge /etc/rules", "-f", "-F", "--write-batch=x",
            "--only-write-batch=x", "--read-batch=x", "--config=x", "--temp-dir=/tmp", "-T",
            "--backup-dir=x", "--partial-dir=x", "--compare-dest=x", "--copy-dest=x", "--link-dest=x",
            "--daemon", "--server", "--sender", "--remove-source-files", "--port=874", "--copy-links", "-L",
            "--out-format=%f", "--info=progress2", "-h", "--chown=root:root", "--iconv=utf8",
            "--inplace", "--append-verify", "--trust-sender",
        )
    ],
    "excludes": [
        refused("wrong-type-string", "*.iso"),
        refused("wrong-type-object", {"pattern": "*.iso"}),
        refused("wrong-type-item-int", [1]),
        refused("wrong-type-item-null", [None]),
        refused("wrong-type-item-list", [["*.iso"]]),
        refused("null", None),
        refused("empty-item", [""]),
        refused("leading-dash", ["-e"]),
        refused("leading-double-dash", ["--rsh=sh"]),
        refused("rule-include", ["+ /etc/shadow"]),
        refused("rule-exclude", ["- *.iso"]),
        refused("nul", ["*.iso\x00"]),
        refused("newline", ["*.iso\n+ /etc"]),
        refused("tab", ["*.iso\t"]),
        refused("range-item-256-chars", ["a" * 256]),
        refused("too-many-items", ["x"] * 257),
        refused("fullwidth", ["＊.iso"]),
        refused("cyrillic-e", ["d\u0435bian/"]),
    ],
    "timeout": [
        refused("wrong-type-string", "600"),
        refused("wrong-type-float", 1.5),
        refused("wrong-type-bool", True),
        refused("wrong-type-list", [600]),
        refused("range-zero", 0),
        refused("range-negative", -1),
        refused("range-above-max", MAX_TIMEOUT + 1),
        refused("range-huge", 10 ** 30),
        refused("leading-dash-string", "-1"),
        refused("shell-semicolon", "600;reboot"),
        refused("fullwidth-digits", "６００"),
    ],
    "upstream_password": [
        refused("wrong-type-int", 1234),
        refused("wrong-type-bool", True),
        refused("wrong-type-list", ["hunter2"]),
        refused("wrong-type-object", {"password": "hunter2"}),
        refused("empty", ""),
        refused("oversized-257", "p" * 257),
        refused("oversized-10k", "p" * 10_000),
        refused("nul", "hunter\x00two"),
        refused("newline", "hunter2\nRSYNC_PASSWORD=x"),
        refused("carriage-return", "hunter2\r"),
        refused("escape-sequence", "hunter2\x1b[2J"),
    ],
}

ACCEPTED = {
    "description": [
        accepted("plain", "The universal operating system"),
        accepted("chinese", "Debian 是一个自由的操作系统"),
        accepted("punctuation", "Arch Linux: a simple, lightweight distribution (x86_64 & aarch64)."),
        accepted("200-chars", "a" * 200),
        accepted("null", None),
    ],
    "help_url": [
        accepted("https", "https://mirrors.example.org/help/debian/"),
        accepted("http-port", "http://mirrors.example.org:8080/help"),
        accepted("query-fragment", "https://wiki.example.org/index.php?title=Debian#mirror"),
        accepted("ipv4", "http://192.0.2.10/help"),
        accepted("ipv6", "http://[2001:db8::1]:8080/help"),
        accepted("null", None),
    ],
    "public_path": [
        accepted("plain", "/debian"),
        accepted("trailing-slash", "/debian/"),
        accepted("nested", "/pub/linux/debian-cd/"),
        accepted("dots-inside", "/ubuntu.releases"),
        accepted("tilde-plus", "/~user/gcc+tools"),
        accepted("root", "/"),
    ],
    "name": [
        accepted("plain", "debian"),
        accepted("dash", "debian-security"),
        accepted("dot", "ubuntu.releases"),
        accepted("underscore", "pypi_simple"),
        accepted("leading-digit", "0ad"),
        accepted("one-char", "a"),
        accepted("63-chars", "a" * 63),
    ],
    "upstream": [
        accepted("host-module", "rsync://mirror.example.org/debian"),
        accepted("user", "rsync://anonymous@mirror.example.org/debian"),
        accepted("port", "rsync://mirror.example.org:8873/debian"),
        accepted("user-port-nested-path", "rsync://mirror_user@mirror.example.org:873/debian-cd/12.5.0/amd64"),
        accepted("ipv4", "rsync://192.0.2.10/debian"),
        accepted("ipv6-loopback", "rsync://[::1]/debian"),
        accepted("ipv6-port-path", "rsync://[2001:db8::1]:873/debian/pool"),
        accepted("trailing-slash", "rsync://mirror.example.org/debian/"),
        accepted("path-with-plus-and-tilde", "rsync://mirror.example.org/pub/gcc+tools/~stable"),
    ],
    "schedule": [
        accepted("every-15-minutes", "*/15 * * * *"),
        accepted("weekdays-at-3", "0 3 * * 1-5"),
        accepted("every-6-hours", "0 */6 * * *"),
        accepted("monthly", "30 2 1 * *"),
        accepted("sunday-as-0", "0 0 * * 0"),
        accepted("sunday-as-7", "0 0 * * 7"),
        accepted("day-names", "0 0 * * mon-fri"),
        accepted("list", "5,35 * * * *"),
        accepted("manual-only", None),
    ],
    "enabled": [
        accepted("true", True),
        accepted("false", False),
    ],
    "rsync_options": [
        accepted(option, [option]) for option in (
            "--bwlimit=1000", "--bwlimit=10M", "--timeout=600", "--contimeout=30", "-4", "-6", "--no-motd",
            "--max-delete=1000", "--checksum", "--size-only", "--exclude=*.iso", "--include=*/",
            "--delete-excluded", "--delete-after", "--max-size=4G", "--chmod=Du+rwx,Fgo-w", "-z",
            "--inc-recursive", "--no-inc-recursive",
        )
    ] + [
        accepted("empty-list", []),
        accepted("several", ["--bwlimit=1000", "--timeout=600", "--contimeout=30", "-4", "--no-motd",
                             "--max-delete=1000", "--exclude=*.iso", "--delete-excluded"]),
    ],
    "excludes": [
        accepted("glob", ["*.iso"]),
        accepted("anchored", ["/project/trace/*"]),
        accepted("double-star", ["**/Packages.gz"]),
        accepted("tmp-dir", [".~tmp~/"]),
        accepted("character-class", ["[abc]*.deb"]),
        accepted("with-space", ["dir with space/*"]),
        accepted("empty-list", []),
        accepted("256-items", [f"dir{n}/" for n in range(256)]),
    ],
    "timeout": [
        accepted("one-second", 1),
        accepted("ten-minutes", 600),
        accepted("maximum", MAX_TIMEOUT),
        accepted("default", None),
    ],
    "upstream_password": [
        accepted("plain", "s3cret"),
        accepted("256-chars", "p" * 256),
        accepted("shell-metacharacters", "p@ss;w|rd&$(x)`y`"),
        accepted("leading-dash", "-not-a-flag"),
        accepted("clear", None),
    ],
}


def _params(table, fields):
    params = []
    for field in fields:
        for case_id, value in table[field]:
            params.append(pytest.param(field, value, id=f"{field}:{case_id}"))
    return params


# --- a shared app for the field tables ----------------------------------------

@pytest.fixture(scope="module")
def table_rsync():
    return FakeRsyncRunner()


@pytest.fixture(scope="module")
def table_app(tmp_path_factory, table_rsync):
    from master import create_app
    return create_app({
        "DATA_DIR": str(tmp_path_factory.mktemp("bad-input") / "data"),
        "ADMIN_TOKEN": TABLE_TOKEN,
        "LOG_LEVEL": "CRITICAL",
        "CLOCK": FakeClock(),
        "RSYNC_RUNNER": table_rsync,
    })


@pytest.fixture(scope="module")
def baseline(table_app):
    """The listing of the shared app with only the EXISTING project in it."""
    client = table_app.test_client()
    response = client.post(PROJECTS, json=EXISTING, headers=TABLE_ADMIN)
    assert response.status_code == 201, response.get_json()
    return client.get(PROJECTS, headers=TABLE_ADMIN).get_json()


@pytest.fixture
def table_client(table_app, baseline):
    """A client on the shared app; whatever a test stored is undone afterwards."""
    client = table_app.test_client()
    yield client
    if client.get(PROJECTS, headers=TABLE_ADMIN).get_json() != baseline:
        for project in client.get(PROJECTS, headers=TABLE_ADMIN).get_json():
            if project["name"] != EXISTING["name"]:
                client.delete(f"{PROJECTS}/{project['name']}", headers=TABLE_ADMIN)
        restore = {field: EXISTING[field] for field in PATCHABLE}
        client.patch(f"{PROJECTS}/{EXISTING['name']}", json=restore, headers=TABLE_ADMIN)
        assert client.get(PROJECTS, headers=TABLE_ADMIN).get_json() == baseline


def list_projects(client, headers=TABLE_ADMIN):
    response = client.get(PROJECTS, headers=headers)
    assert response.status_code == 200
    return response.get_json()


def assert_secret_not_echoed(response, field, value):
    if field == "upstream_password" and isinstance(value, str) and len(value) >= 4:
        assert value not in response.get_data(as_text=True)


def create_body(field, value):
    body = {"name": "fresh", "upstream": "rsync://mirror.example.org/fresh"}
    body[field] = value
    return body


# --- every writable field, refused -------------------------------------------

@pytest.mark.parametrize("field, value", _params(REFUSED, REFUSED))
def test_create_refuses_bad_value_and_names_the_field(table_client, table_rsync, field, value):
    before = list_projects(table_client)
    response = table_client.post(PROJECTS, json=create_body(field, value), headers=TABLE_ADMIN)
    assert_error_shape(response, field=field)
    assert_secret_not_echoed(response, field, value)
    assert list_projects(table_client) == before
    assert table_rsync.jobs == []


@pytest.mark.parametrize("field, value", _params(REFUSED, PATCHABLE))
def test_patch_refuses_bad_value_and_leaves_the_project_unchanged(table_client, table_rsync, field, value):
    url = f"{PROJECTS}/{EXISTING['name']}"
    before = table_client.get(url, headers=TABLE_ADMIN).get_json()
    response = table_client.patch(url, json={field: value}, headers=TABLE_ADMIN)
    assert_error_shape(response, field=field)
    assert_secret_not_echoed(response, field, value)
    assert table_client.get(url, headers=TABLE_ADMIN).get_json() == before
    assert table_rsync.jobs == []


def test_patch_with_one_bad_field_applies_none_of_the_others(table_client, table_rsync):
    url = f"{PROJECTS}/{EXISTING['name']}"
    before = table_client.get(url, headers=TABLE_ADMIN).get_json()
    response = table_client.patch(url, json={"enabled": False, "timeout": 60, "upstream": "evil::mod"},
                                  headers=TABLE_ADMIN)
    assert_error_shape(response, field="upstream")
    assert table_client.get(url, headers=TABLE_ADMIN).get_json() == before
    assert table_rsync.jobs == []


# --- and the values a mirror admin needs, accepted ----------------------------

def assert_stored(project, field, value):
    if field == "upstream_password":
        assert "upstream_password" not in project
        assert project["has_password"] is (value is not None)
    elif field == "timeout" and value is None:
        assert isinstance(project["timeout"], int) and project["timeout"] > 0
    else:
        assert project[field] == value


@pytest.mark.parametrize("field, value", _params(ACCEPTED, ACCEPTED))
def test_create_accepts_good_value(table_client, table_rsync, field, value):
    body = {"name": "accepted", "upstream": "rsync://mirror.example.org/accepted", field: value}
    response = table_client.post(PROJECTS, json=body, headers=TABLE_ADMIN)
    assert response.status_code == 201, response.get_json()
    stored = table_client.get(f"{PROJECTS}/{body['name']}", headers=TABLE_ADMIN).get_json()
    assert_stored(stored, field, value)
    assert table_rsync.jobs == []


@pytest.mark.parametrize("field, value", _params(ACCEPTED, PATCHABLE))
def test_patch_accepts_good_value(table_client, table_rsync, field, value):
    url = f"{PROJECTS}/{EXISTING['name']}"
    response = table_client.patch(url, json={field: value}, headers=TABLE_ADMIN)
    assert response.status_code == 200, response.get_json()
    assert_stored(table_client.get(url, headers=TABLE_ADMIN).get_json(), field, value)
    assert table_rsync.jobs == []


# --- request-level refusals (a fresh app per test) -----------------------------

@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("field", [
    "bogus", "upstream_pasword", "status", "has_password", "size", "last_success", "next_run", "created_at",
])
def test_unknown_or_read_only_field_is_refused_and_named(client, admin, make_project, fake_rsync, method, field):
    make_project("debian")
    before = list_projects(client, admin)
    if method == "post":
        response = client.post(PROJECTS, json=create_body(field, "x"), headers=admin)
    else:
        response = client.patch(f"{PROJECTS}/debian", json={field: "x"}, headers=admin)
    assert_error_shape(response, field=field)
    assert list_projects(client, admin) == before
    assert fake_rsync.jobs == []


def test_name_cannot_be_changed_by_patch(client, admin, make_project):
    make_project("debian")
    before = list_projects(client, admin)
    response = client.patch(f"{PROJECTS}/debian", json={"name": "ubuntu"}, headers=admin)
    assert_error_shape(response, field="name")
    assert list_projects(client, admin) == before


NOT_A_JSON_OBJECT = [
    pytest.param(b"{bad", "application/json", id="invalid-json"),
    pytest.param(b"[]", "application/json", id="json-list"),
    pytest.param(b'[{"name": "x"}]', "application/json", id="json-list-of-object"),
    pytest.param(b"42", "application/json", id="json-number"),
    pytest.param(b'"debian"', "application/json", id="json-string"),
    pytest.param(b"null", "application/json", id="json-null"),
    pytest.param(b'{"name": "\xff"}', "application/json", id="not-utf8"),
    pytest.param(b"[" * 50_000, "application/json", id="nested-too-deep"),
    pytest.param(b'{"timeout": ' + b"9" * 5000 + b"}", "application/json", id="integer-5000-digits"),
]
NOT_JSON_AT_ALL = [
    pytest.param(b"enabled=false", "application/x-www-form-urlencoded", id="form-encoded"),
    pytest.param(b'{"enabled": false}', "text/plain", id="json-sent-as-text"),
    pytest.param(b"", "application/json", id="empty-json"),
    pytest.param(None, None, id="no-body"),
]


def _send(client, method, url, headers, data, content_type):
    if data is None:
        return client.open(url, method=method, headers=headers)
    return client.open(url, method=method, headers=headers, data=data, content_type=content_type)


@pytest.mark.parametrize("data, content_type", NOT_A_JSON_OBJECT + NOT_JSON_AT_ALL)
def test_create_with_body_that_is_not_a_json_object_is_refused(client, admin, fake_rsync, data, content_type):
    response = _send(client, "POST", PROJECTS, admin, data, content_type)
    assert_error_shape(response)
    assert list_projects(client, admin) == []
    assert fake_rsync.jobs == []


@pytest.mark.parametrize("data, content_type", NOT_A_JSON_OBJECT + NOT_JSON_AT_ALL)
def test_patch_with_body_that_is_not_a_json_object_is_refused(client, admin, make_project, fake_rsync,
                                                              data, content_type):
    make_project("debian")
    before = client.get(f"{PROJECTS}/debian", headers=admin).get_json()
    response = _send(client, "PATCH", f"{PROJECTS}/debian", admin, data, content_type)
    assert_error_shape(response)
    assert client.get(f"{PROJECTS}/debian", headers=admin).get_json() == before
    assert fake_rsync.jobs == []


def _oversized_body():
    # Valid JSON and valid values: only its size is wrong.
    return {"name": "huge", "upstream": "rsync://mirror.example.org/huge", "excludes": ["a" * 250] * 256,
            "rsync_options": ["--exclude=" + "b" * 250] * 32}


def test_create_with_body_over_max_content_length_is_refused_with_413(client, admin, app, fake_rsync):
    body = _oversized_body()
    response = client.post(PROJECTS, json=body, headers=admin)
    assert len(response.request.get_data()) > app.config["MAX_CONTENT_LENGTH"] == 64 * 1024
    assert_error_shape(response, status=413)
    assert "over the limit of 65536 bytes" in response.get_json()["message"]
    assert "MAX_CONTENT_LENGTH" in response.get_json()["message"]
    assert list_projects(client, admin) == []
    assert fake_rsync.jobs == []


def test_patch_with_body_over_max_content_length_is_refused_with_413(client, admin, make_project, fake_rsync):
    make_project("debian")
    before = client.get(f"{PROJECTS}/debian", headers=admin).get_json()
    body = _oversized_body()
    del body["name"]
    response = client.patch(f"{PROJECTS}/debian", json=body, headers=admin)
    assert_error_shape(response, status=413)
    assert client.get(f"{PROJECTS}/debian", headers=admin).get_json() == before
    assert fake_rsync.jobs == []


@pytest.mark.parametrize("method, url", [
    pytest.param("GET", "/api/v1/projects/nope", id="get-project"),
    pytest.param("PATCH", "/api/v1/projects/nope", id="patch-project"),
    pytest.param("DELETE", "/api/v1/projects/nope", id="delete-project"),
    pytest.param("POST", "/api/v1/projects/nope/syncs", id="trigger-sync"),
    pytest.param("GET", "/api/v1/projects/nope/runs", id="project-runs"),
    pytest.param("GET", "/api/v1/projects/..%2f..%2fetc", id="get-project-traversal"),
    pytest.param("GET", "/api/v1/runs/999", id="get-run"),
    pytest.param("GET", "/api/v1/runs/999/log", id="run-log"),
    pytest.param("GET", "/api/v1/runs/99999999999999999999", id="get-run-beyond-64-bit"),
])
def test_missing_project_or_run_is_404(client, admin, make_project, fake_rsync, method, url):
    make_project("debian")
    before = list_projects(client, admin)
    body = {"enabled": False} if method == "PATCH" else None
    response = client.open(url, method=method, headers=admin, json=body)
    assert_error_shape(response, status=404)
    assert list_projects(client, admin) == before
    assert fake_rsync.jobs == []


@pytest.mark.parametrize("run_id", ["9223372036854775808", "9" * 40])
def test_a_run_id_beyond_64_bits_is_named_in_its_404(client, admin, run_id):
    response = client.get(f"/api/v1/runs/{run_id}", headers=admin)
    assert_error_shape(response, status=404)
    assert response.get_json()["message"] == f"{run_id} is not an id here: ids go up to 9223372036854775807."


def test_duplicate_name_is_409_naming_name(client, admin, make_project, fake_rsync):
    make_project("debian")
    before = list_projects(client, admin)
    response = client.post(PROJECTS, json={"name": "debian", "upstream": "rsync://other.example.org/debian"},
                           headers=admin)
    assert_error_shape(response, status=409, field="name")
    assert list_projects(client, admin) == before
    assert fake_rsync.jobs == []


# --- upstream_password is write-only ----------------------------------------------

def test_upstream_password_is_never_returned_but_has_password_says_it_is_set(app, client, admin, fake_rsync):
    from master.services import syncs

    secret = "Hunter2-Very-Secret"
    responses = {}
    responses["create"] = client.post(PROJECTS, json={
        "name": "debian", "upstream": "rsync://mirror@mirror.example.org/debian", "upstream_password": secret,
    }, headers=admin)
    assert responses["create"].status_code == 201
    responses["get"] = client.get(f"{PROJECTS}/debian", headers=admin)
    responses["list"] = client.get(PROJECTS, headers=admin)
    responses["patch"] = client.patch(f"{PROJECTS}/debian", json={"timeout": 60}, headers=admin)
    responses["status"] = client.get("/api/v1/status")
    responses["trigger"] = client.post(f"{PROJECTS}/debian/syncs", headers=admin)
    run_id = responses["trigger"].get_json()["id"]
    with app.app_context():
        for claimed in syncs.run_ids_to_execute(1):
            syncs.start_upstream_sync(claimed)
    assert fake_rsync.jobs and fake_rsync.jobs[0].password == secret  # it did reach the runner
    responses["run"] = client.get(f"/api/v1/runs/{run_id}", headers=admin)
    responses["runs"] = client.get(f"{PROJECTS}/debian/runs", headers=admin)
    responses["log"] = client.get(f"/api/v1/runs/{run_id}/log", headers=admin)

    for what, response in responses.items():
        assert response.status_code < 300, (what, response.status_code)
        assert secret not in response.get_data(as_text=True), what
    for what in ("create", "get", "patch", "trigger", "run"):
        assert "upstream_password" not in responses[what].get_json(), what
    for what in ("list", "status", "runs"):
        items = responses[what].get_json()
        assert items and all("upstream_password" not in item for item in items), what
    for what in ("create", "get", "patch"):
        assert responses[what].get_json()["has_password"] is True, what
    assert responses["list"].get_json()[0]["has_password"] is True

    cleared = client.patch(f"{PROJECTS}/debian", json={"upstream_password": None}, headers=admin)
    assert cleared.get_json()["has_password"] is False


def test_refused_password_is_not_echoed_in_the_error(client, admin):
    secret = "Hunter2-Very-Secret\n"
    response = client.post(PROJECTS, json={"name": "debian", "upstream": "rsync://mirror.example.org/debian",
                                           "upstream_password": secret}, headers=admin)
    assert_error_shape(response, field="upstream_password")
    assert secret.strip() not in response.get_data(as_text=True)


def test_password_in_upstream_url_is_not_echoed_in_the_error(client, admin):
    response = client.post(PROJECTS, json={"name": "debian",
                                           "upstream": "rsync://mirror:Hunter2-Secret@mirror.example.org/debian"},
                           headers=admin)
    assert_error_shape(response, field="upstream")
    assert "Hunter2-Secret" not in response.get_data(as_text=True)


# --- query parameters of the runs listing ------------------------------------------

@pytest.mark.parametrize("query, parameter", [
    pytest.param("limit=0", "limit", id="limit-zero"),
    pytest.param("limit=-1", "limit", id="limit-negative"),
    pytest.param("limit=501", "limit", id="limit-above-max"),
    pytest.param("limit=abc", "limit", id="limit-not-a-number"),
    pytest.param("limit=1.5", "limit", id="limit-fraction"),
    pytest.param("before=-1", "before", id="before-negative"),
    pytest.param("before=0", "before", id="before-zero"),
    pytest.param("before=abc", "before", id="before-not-a-number"),
    pytest.param("before=99999999999999999999", "before", id="before-beyond-64-bit"),
])
def test_bad_runs_query_parameter_is_refused_and_named(client, admin, make_project, query, parameter):
    make_project("debian")
    response = client.get(f"{PROJECTS}/debian/runs?{query}", headers=admin)
    assert_error_shape(response, field=parameter)


def test_negative_log_offset_is_refused_and_named(client, admin, make_project):
    make_project("debian")
    run_id = client.post(f"{PROJECTS}/debian/syncs", headers=admin).get_json()["id"]
    response = client.get(f"/api/v1/runs/{run_id}/log?offset=-1", headers=admin)
    assert_error_shape(response, field="offset")


@pytest.mark.parametrize("option, hint", [
    ("--bwlimit 1000", "did you mean --bwlimit=1000?"),
    ("--exclude  *.iso", "did you mean --exclude=*.iso?"),
    ("-a -v", "give each option as its own item"),
])
def test_an_option_with_a_space_for_its_equals_sign_gets_a_hint(client, admin, option, hint):
    response = client.post(PROJECTS, json={"name": "debian", "upstream": "rsync://mirror.example.org/debian",
                                           "rsync_options": [option]}, headers=admin)
    assert_error_shape(response, field="rsync_options")
    assert hint in response.get_json()["fields"]["rsync_options"]["0"][0]


def test_a_project_named_like_the_rsync_daemons_global_section_is_refused(client, admin):
    response = client.post("/api/v1/projects", json={"name": "global", "upstream": "rsync://m.example.org/g"},
                           headers=admin)
    assert response.status_code == 422 and "name" in response.json["fields"]
    assert "reserved" in response.json["fields"]["name"][0]


@pytest.mark.parametrize("raw", ['{"name": "a", "name": "debian", "upstream": "rsync://m.example.org/d"}',
                                 '{"name": "debian", "upstream": "rsync://m.example.org/d", "timeout": NaN}'])
def test_duplicate_keys_and_nan_are_refused_not_silently_resolved(client, admin, raw):
    response = client.post("/api/v1/projects", data=raw, headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json["message"]
    assert client.get("/api/v1/projects/debian", headers=admin).status_code == 404


def test_public_path_defaults_to_the_name_and_null_restores_the_default(client, admin, make_project):
    created = make_project("debian")
    assert created["public_path"] == "/debian"
    assert created["description"] is None and created["help_url"] is None
    moved = client.patch(f"{PROJECTS}/debian", json={"public_path": "/pub/debian/"}, headers=admin)
    assert moved.get_json()["public_path"] == "/pub/debian/"
    reset = client.patch(f"{PROJECTS}/debian", json={"public_path": None}, headers=admin)
    assert reset.get_json()["public_path"] == "/debian"


# --- input an endpoint does not read -----------------------------------------------

@pytest.mark.parametrize("method, url, parameter", [
    pytest.param("get", f"{PROJECTS}?limt=5", "limt", id="projects-list-typo"),
    pytest.param("get", f"{PROJECTS}/debian/runs?befor=3", "befor", id="runs-list-typo"),
    pytest.param("post", f"{PROJECTS}/debian/syncs?forse=true", "forse", id="sync-typo"),
    pytest.param("delete", f"{PROJECTS}/debian?forced=1", "forced", id="delete-typo"),
    pytest.param("get", f"{PROJECTS}/debian?verbose=1", "verbose", id="endpoint-without-parameters"),
])
def test_an_unknown_query_parameter_is_refused_and_named(client, admin, make_project, fake_rsync, method, url,
                                                         parameter):
    make_project("debian")
    body = assert_error_shape(getattr(client, method)(url, headers=admin), status=422, field=parameter)
    assert parameter in body["message"], body
    assert fake_rsync.jobs == [] and client.get(f"{PROJECTS}/debian/runs", headers=admin).get_json() == []
    assert client.get(f"{PROJECTS}/debian", headers=admin).status_code == 200   # not deleted


def test_a_body_sent_to_a_sync_trigger_is_refused_with_where_its_options_go(client, admin, make_project,
                                                                             fake_rsync):
    make_project("debian")
    response = client.post(f"{PROJECTS}/debian/syncs", headers=admin, json={"force": True})
    body = assert_error_shape(response, status=400, field="body")
    assert "?force=" in body["message"], body
    assert client.get(f"{PROJECTS}/debian/runs", headers=admin).get_json() == []
    assert client.post(f"{PROJECTS}/debian/syncs?force=true", headers=admin).status_code == 202


def test_a_body_sent_to_a_cancel_is_refused(client, admin, make_project, fake_rsync):
    make_project("debian")
    run_id = client.post(f"{PROJECTS}/debian/syncs", headers=admin).get_json()["id"]
    response = client.post(f"/api/v1/runs/{run_id}/cancel", headers=admin, json={"reason": "x"})
    assert "send none" in assert_error_shape(response, status=400, field="body")["message"]
    assert client.get(f"/api/v1/runs/{run_id}", headers=admin).get_json()["state"] != "cancelled"


def test_unread_input_is_checked_after_the_caller_is_authenticated(client, make_project, fake_rsync):
    make_project("debian")
    assert client.post(f"{PROJECTS}/debian/syncs?forse=1", json={"x": 1}).status_code == 401


def test_the_public_feed_and_the_push_webhook_take_what_their_callers_add(client, make_project, fake_rsync):
    assert client.get("/api/v1/status?_=1733270400").status_code == 200
    make_project("debian", push_token="p" * 32)
    response = client.post(f"{PROJECTS}/debian/push?ref=main", json={"ref": "refs/heads/main"},
                           headers={"Authorization": f"Bearer {'p' * 32}"})
    assert response.status_code == 202, response.get_data(as_text=True)


@pytest.mark.parametrize("hooks, summary", [
    ("x", "hooks: Must be an object whose keys are hooks"),
    ({"nope": "/bin/true"}, "hooks.nope: Unknown field"),
])
def test_a_bad_hooks_value_is_described_as_a_path_with_no_schema_internals(client, admin, fake_rsync, hooks,
                                                                           summary):
    response = client.post(PROJECTS, json={"name": "debian", "upstream": "rsync://mirror.example.org/debian",
                                           "hooks": hooks}, headers=admin)
    body = assert_error_shape(response, status=422, field="hooks")
    assert body["message"].startswith(f"Invalid request: {summary}"), body
    assert "_schema" not in body["message"], body
