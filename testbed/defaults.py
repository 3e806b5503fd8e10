"""The embedded default scenario of ``twistd -n testbed``: every server on its fixed loopback port."""

DEFAULT_SCENARIO_TOML = """\
# The scenario `twistd -n testbed` runs when no --config is given.
seed = 0

[journal]
max_events = 200000  # a long-running daemon keeps the newest events; --journal FILE keeps them all

[servers.http]
listen = "tcp:8080:interface=127.0.0.1"
tls_listen = "tcp:8443:interface=127.0.0.1"

[servers.smtp]
listen = "tcp:2525:interface=127.0.0.1"
tls = "starttls"
tls_listen = "tcp:2465:interface=127.0.0.1"

[servers.pop3]
listen = "tcp:2110:interface=127.0.0.1"
tls = "starttls"
tls_listen = "tcp:2995:interface=127.0.0.1"

[servers.imap]
listen = "tcp:2143:interface=127.0.0.1"
tls = "starttls"
tls_listen = "tcp:2993:interface=127.0.0.1"

[servers.ftp]
listen = "tcp:2121:interface=127.0.0.1"
tls = "starttls"
anonymous = true

[servers.ftp.files]
"pub/readme.txt" = "Served by twisted-testbed's in-memory FTP tree.\\n"
"incoming/" = ""

[servers.dns]
listen = "tcp:1053:interface=127.0.0.1"

[servers.dns.records]
"www.example.test" = { A = "127.0.0.1", AAAA = "::1" }
"mail.example.test" = { A = "127.0.0.1" }
"example.test" = { MX = "10 mail.example.test", TXT = "v=spf1 -all" }

[users]
"alice@example.test" = "secret"
"bob@example.test" = "secret"
"""


def default_scenario_data() -> dict:
    import tomllib

    return tomllib.loads(DEFAULT_SCENARIO_TOML)
