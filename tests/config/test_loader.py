"""Config loader: every error class carries the right path, line and wording."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

from portway.config.errors import ConfigError, ConfigIssue
from portway.config.loader import (
    config_hash,
    load_config,
    load_config_text,
    load_document,
)
from portway.config.schema import GatewayConfig
from portway.pipeline import registry as registry_module
from portway.pipeline.plugin import Plugin, PluginConfig, Stage
from portway.pipeline.registry import Registry

# -- test plugins: a private registry keeps the global one untouched ------------------------


class _Limit(PluginConfig):
    rate: int = Field(gt=0)
    per: str = "1s"


class _LimitsConfig(PluginConfig):
    limits: list[_Limit] = Field(default_factory=list)
    key: str = "ip"


class EdgePlugin(Plugin[PluginConfig]):
    name: ClassVar[str] = "t_edge"
    stage: ClassVar[Stage] = Stage.edge


class AuthnPlugin(Plugin[PluginConfig]):
    name: ClassVar[str] = "t_authn"
    stage: ClassVar[Stage] = Stage.authn


class LimitsPlugin(Plugin[_LimitsConfig]):
    name: ClassVar[str] = "t_limits"
    stage: ClassVar[Stage] = Stage.traffic
    Config: ClassVar[type[PluginConfig]] = _LimitsConfig


class TerminatePlugin(Plugin[PluginConfig]):
    name: ClassVar[str] = "request_termination"
    stage: ClassVar[Stage] = Stage.edge


class _BuggyConfig(PluginConfig):
    x: int = 0

    def model_post_init(self, context: Any) -> None:
        raise RuntimeError("validator bug")


class BuggyPlugin(Plugin[_BuggyConfig]):
    name: ClassVar[str] = "t_buggy"
    Config: ClassVar[type[PluginConfig]] = _BuggyConfig


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    for cls in (EdgePlugin, AuthnPlugin, LimitsPlugin, TerminatePlugin, BuggyPlugin):
        r.register(cls)
    return r


UPSTREAMS = """\
upstreams:
  users:
    targets:
      - url: http://127.0.0.1:9000
"""


def load(text: str, reg: Registry | None = None, env: dict[str, str] | None = None) -> Any:
    return load_config_text(textwrap.dedent(text), env=env or {}, registry=reg or Registry())


def issues(
    text: str, reg: Registry | None = None, env: dict[str, str] | None = None
) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load(text, reg, env)
    return info.value.errors


def only(text: str, reg: Registry | None = None, env: dict[str, str] | None = None) -> ConfigIssue:
    found = issues(text, reg, env)
    assert len(found) == 1, [str(i) for i in found]
    return found[0]


# -- YAML level ---------------------------------------------------------------------------


def test_syntax_error_has_line_and_column() -> None:
    issue = only("routes:\n  - name: a\n    upstream: b: c\n")
    assert issue.path == ""
    assert issue.line == 3
    assert issue.column == 16
    assert issue.message.startswith("YAML syntax error: mapping values are not allowed")
    assert str(issue).startswith("line 3, column 16: YAML syntax error")


def test_unclosed_flow_sequence_names_where_it_started() -> None:
    issue = only("server:\n  trusted_proxies: [10.0.0.0/8,\n\nadmin: {}\n")
    assert issue.line == 5  # libyaml notices at the end of the stream
    assert "started at line 2" in issue.message


def test_tab_indentation_is_explained() -> None:
    issue = only("server:\n\tworkers: 2\n")
    assert issue.line == 2
    assert "tab" in issue.message


def test_control_character_is_rejected_with_position() -> None:
    issue = only("server:\n  via: a\x01b\n")
    assert (issue.line, issue.column) == (2, 9)
    assert "invalid character" in issue.message


def test_duplicate_key_reports_second_occurrence() -> None:
    issue = only(
        UPSTREAMS
        + """\
routes:
  - name: a
    upstream: users
    strip_prefix: true
    strip_prefix: false
"""
    )
    assert issue.path == "routes[0].strip_prefix"
    assert issue.line == 9
    assert issue.message == "duplicate key 'strip_prefix' (first at line 8)"


def test_duplicate_top_level_key() -> None:
    issue = only("server: {}\nadmin: {}\nserver: {workers: 2}\n")
    assert (issue.path, issue.line) == ("server", 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the config is empty"),
        ("# only a comment\n", "the config is empty"),
        ("- a\n- b\n", "the config must be a mapping of sections at the top level"),
        ("just text\n", "the config must be a mapping of sections at the top level"),
    ],
)
def test_document_shape(text: str, message: str) -> None:
    assert only(text).message == message


def test_multiple_documents_are_refused() -> None:
    issue = only("server: {}\n---\nadmin: {}\n")
    assert issue.line == 2
    assert "single YAML document" in issue.message


def test_unsupported_tag_is_refused() -> None:
    issue = only("server:\n  via: !!python/object:os.system x\n")
    assert issue.path == "server.via"
    assert "unsupported YAML tag" in issue.message
    bad_map = only("server: !!python/object:os.system {}\n")
    assert "unsupported YAML tag" in bad_map.message


def test_yaml12_scalars_keep_on_yes_no_as_strings() -> None:
    cfg = load(
        UPSTREAMS
        + """\
    retries:
      on: [connect_error, 503]
    host_header: preserve
server:
  via: yes
"""
    )
    assert cfg.upstreams["users"].retries.on == ["connect_error", "503"]
    assert cfg.server.via == "yes"


def test_explicit_str_tag_and_quoting_keep_strings() -> None:
    issue = only("admin:\n  token: 12345\n")
    assert issue.message == "must be a string (got 12345); quote it to make it a string"
    cfg = load("admin:\n  token: !!str 12345\nserver:\n  debug_token: '678'\n")
    assert cfg.admin.token == "12345"
    assert cfg.server.debug_token == "678"


def test_anchors_aliases_and_merge_keys() -> None:
    cfg = load(
        """\
        upstreams:
          a: &base
            targets: [{url: "http://127.0.0.1:1"}]
            timeouts: &t {connect: 1s, read: 5s}
          b:
            <<: *base
            balancing: round_robin
          c:
            <<: [{balancing: random}, *base]
            timeouts: *t
        routes:
          - {name: r, upstream: b}
        """
    )
    assert cfg.upstreams["b"].balancing == "round_robin"
    assert cfg.upstreams["b"].targets[0].url == "http://127.0.0.1:1"
    assert cfg.upstreams["b"].timeouts.connect == 1.0
    assert cfg.upstreams["c"].balancing == "random"
    assert cfg.upstreams["c"].timeouts.read == 5.0


def test_merge_key_explicit_wins_and_lines_point_to_source() -> None:
    text = textwrap.dedent(
        """\
        upstreams:
          a: &base
            targets: [{url: "http://127.0.0.1:1"}]
            balancing: random
          b:
            <<: *base
            balancing: nope
        """
    )
    with pytest.raises(ConfigError) as info:
        load_document(text, env={}, registry=Registry())
    [issue] = info.value.errors
    assert issue.path == "upstreams.b.balancing"
    assert issue.line == 7
    doc_text = text.replace("balancing: nope", "balancing: round_robin")
    doc = load_document(doc_text, env={}, registry=Registry())
    assert doc.config.upstreams["b"].balancing == "round_robin"
    # merged keys keep the line where they are written
    assert doc.line_of(("upstreams", "b", "targets", 0, "url")) == 3


def test_alias_bomb_is_refused_quickly() -> None:
    levels = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        levels.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    text = "server: {}\nx:\n" + "".join(f"  {line}\n" for line in levels)
    issue = only(text)
    assert "alias bomb" in issue.message


def test_recursive_alias_is_refused() -> None:
    issue = only("server: &s\n  limits: *s\n")
    assert "contains it" in issue.message
    assert issue.line == 2


def test_deep_nesting_is_refused() -> None:
    issue = only("server: " + "[" * 200 + "]" * 200 + "\n")
    assert "nests deeper" in issue.message


# -- schema errors ------------------------------------------------------------------------


def test_unknown_key_with_suggestion() -> None:
    issue = only(UPSTREAMS + "routes:\n  - name: a\n    upstream: users\n    strp_prefix: true\n")
    assert str(issue) == (
        "routes[0].strp_prefix (line 8): unknown key 'strp_prefix'; did you mean 'strip_prefix'?"
    )


def test_unknown_key_without_close_match() -> None:
    issue = only("server:\n  zzzzzz: 1\n")
    assert issue.message == "unknown key 'zzzzzz'"
    top = only("route: []\n")
    assert top.message == "unknown key 'route'; did you mean 'routes'?"


def test_missing_key_points_at_nearest_parent() -> None:
    issue = only(UPSTREAMS + "routes:\n  - upstream: users\n    strip_prefix: true\n")
    assert (issue.path, issue.line, issue.message) == ("routes[0].name", 6, "required")
    tls = only("listeners:\n  - address: 127.0.0.1:8443\n    tls:\n      cert: a.pem\n")
    # the single-certificate form is certificates[0] (listeners[].tls.certificates)
    assert (tls.path, tls.line, tls.message) == (
        "listeners[0].tls.certificates[0].key",
        3,
        "required",
    )


@pytest.mark.parametrize(
    ("text", "path", "line", "message"),
    [
        (
            UPSTREAMS + "        weight: heavy\n",
            "upstreams.users.targets[0].weight",
            5,
            "must be an integer (got 'heavy')",
        ),
        ("routes: {}\n", "routes", 1, "must be a list (got a mapping)"),
        ("server:\n  limits: [1]\n", "server.limits", 2, "must be a mapping (got a list)"),
        ("admin:\n  enabled: maybe\n", "admin.enabled", 2, "must be true or false (got 'maybe')"),
        (
            "server:\n  log_level: loud\n",
            "server.log_level",
            2,
            "must be one of 'debug', 'info', 'warning' or 'error' (got 'loud')",
        ),
        ("server:\n  workers: 0\n", "server.workers", 2, "must be at least 1 (got 0)"),
        ("server:\n  via: [a]\n", "server.via", 2, "must be a string (got a list)"),
    ],
)
def test_wrong_types_read_plainly(text: str, path: str, line: int, message: str) -> None:
    issue = only(text)
    assert (issue.path, issue.line, issue.message) == (path, line, message)


def test_bad_duration() -> None:
    issue = only(UPSTREAMS + "    timeouts:\n      connect: 5 parsecs\n")
    assert issue.path == "upstreams.users.timeouts.connect"
    assert issue.line == 6
    assert issue.message == "invalid duration '5 parsecs': use e.g. 250ms, 2s, 1m, 1h"


def test_bad_size() -> None:
    issue = only("server:\n  limits:\n    max_body_bytes: lots\n")
    assert (issue.path, issue.line) == ("server.limits.max_body_bytes", 3)
    assert "invalid size 'lots'" in issue.message


def test_bad_cidr_is_reported_per_item() -> None:
    issue = only("server:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - 10.0.0.300/32\n")
    assert str(issue) == "server.trusted_proxies[1] (line 4): invalid CIDR '10.0.0.300/32'"


def test_bad_path_form_matches_documented_format() -> None:
    issue = only(
        UPSTREAMS
        + """\
routes:
  - name: a
    upstream: users
    match:
      paths:
        - /ok
        - users
"""
    )
    assert str(issue) == (
        "routes[0].match.paths[1] (line 11): path 'users' must start with '/', '=/' or '~'"
    )


def test_bad_regex_path_and_header() -> None:
    found = issues(
        UPSTREAMS
        + """\
routes:
  - name: a
    upstream: users
    match:
      paths: ["~/v[0-9+", /ok, "~(x"]
      headers:
        x-ok: plain
        x-version: "~(1|2"
"""
    )
    assert [(i.path, i.line) for i in found] == [
        ("routes[0].match.paths[0]", 9),
        ("routes[0].match.paths[2]", 9),
        ("routes[0].match.headers.x-version", 12),
    ]
    assert found[0].message.startswith("invalid regex '/v[0-9+'")
    assert "invalid regex" in found[2].message


def test_model_level_error_points_at_the_entity() -> None:
    issue = only("upstreams:\n  empty:\n    balancing: random\n")
    assert (issue.path, issue.line) == ("upstreams.empty", 2)
    assert issue.message == "an upstream needs targets or discovery"


def test_odd_keys_are_quoted_in_paths() -> None:
    issue = only('upstreams:\n  "a.b":\n    targets: [{url: "ftp://x"}]\n')
    assert issue.path == 'upstreams["a.b"].targets[0].url'
    assert issue.line == 3


# -- cross-document checks ------------------------------------------------------------------


def test_missing_upstream_reference() -> None:
    issue = only(UPSTREAMS + "routes:\n  - name: a\n    upstream: user\n")
    assert (
        str(issue) == "routes[0].upstream (line 7): unknown upstream 'user'; did you mean 'users'?"
    )
    other = only(UPSTREAMS + "routes:\n  - name: a\n    upstream: zzz\n")
    assert other.message == "unknown upstream 'zzz'; defined: users"


def test_route_needs_an_upstream_unless_terminated(reg: Registry) -> None:
    issue = only("routes:\n  - name: a\n    strip_prefix: true\n", reg)
    assert (issue.path, issue.line) == ("routes[0].upstream", 2)
    assert issue.message.startswith("route needs an upstream")
    cfg = load(
        """\
        routes:
          - name: gone
            upstream: null
            plugins:
              - name: request_termination
        """,
        reg,
    )
    assert cfg.routes[0].upstream is None
    disabled = only(
        "routes:\n  - name: a\n    plugins:\n      - {name: request_termination, enabled: false}\n",
        reg,
    )
    assert disabled.message.startswith("route needs an upstream")
    load("plugins: [{name: request_termination}]\nroutes: [{name: a}]\n", reg)


def test_duplicate_route_names_reported_once_with_line() -> None:
    issue = only(
        UPSTREAMS
        + "routes:\n  - {name: a, upstream: users}\n  - {name: b, upstream: users}\n"
        + "  - {name: a, upstream: users}\n"
    )
    assert str(issue) == "routes[2].name (line 8): duplicate route name 'a' (first is routes[0])"


def test_duplicate_consumers() -> None:
    issue = only("consumers:\n  - username: ann\n  - username: bob\n  - username: ann\n")
    assert (issue.path, issue.line) == ("consumers[2].username", 4)


def test_listener_address_clashes() -> None:
    found = issues(
        """\
        listeners:
          - address: 127.0.0.1:8080
          - {name: b, address: "0.0.0.0:8080"}
          - {name: c, address: "127.0.0.1:0"}
          - {name: d, address: "127.0.0.1:0"}
        admin:
          address: 127.0.0.1:8080
        """
    )
    assert [(i.path, i.line) for i in found] == [
        ("listeners[1].address", 3),
        ("admin.address", 7),
    ]
    assert found[0].message == "address 0.0.0.0:8080 is already used by listeners[0]"


def test_client_cert_verification_needs_a_ca() -> None:
    text = """\
    listeners:
      - address: 127.0.0.1:8443
        tls:
          cert: server.pem
          key: server-key.pem
          client_cert: required
    """
    # (the files do not exist: reading them is checked apart, see tests/config/test_tls_config)
    with pytest.raises(ConfigError) as info:
        load_document(textwrap.dedent(text), env={}, check_files=False)
    (issue,) = info.value.errors
    assert (issue.path, issue.line) == ("listeners[0].tls.client_cert", 6)
    assert issue.message.startswith("client_cert: required needs client_ca")
    full = textwrap.dedent(text.rstrip() + "\n          client_ca: ca.pem\n")
    cfg = load_document(full, env={}, check_files=False).config
    assert cfg.listeners[0].tls is not None


def test_admin_without_auth_must_be_loopback() -> None:
    issue = only("admin:\n  address: 0.0.0.0:9901\n  auth: false\n")
    assert (issue.path, issue.line) == ("admin.auth", 3)
    load("admin:\n  address: 127.0.0.1:9901\n  auth: false\n")


# -- plugins ----------------------------------------------------------------------------------


def test_unknown_plugin(reg: Registry) -> None:
    issue = only(
        UPSTREAMS
        + "routes:\n  - name: a\n    upstream: users\n    plugins:\n      - name: t_limit\n",
        reg,
    )
    assert str(issue).startswith(
        "routes[0].plugins[0].name (line 9): unknown plugin 't_limit'; did you mean 't_limits'?"
        "; looked in built-ins; entry points of group 'portway.plugins'"
    )


def test_plugin_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry_module.BUILTINS, "ghost", "portway.plugins.ghost.plugin:Ghost")
    issue = only("plugins:\n  - name: ghost\n")
    assert (issue.path, issue.line) == ("plugins[0].name", 2)
    assert issue.message.startswith("plugin 'ghost' is not available")


def test_global_registry_is_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry_module.registry._classes, "t_limits", LimitsPlugin)
    cfg = load_config_text(
        "plugins:\n  - name: t_limits\n    config: {limits: [{rate: 5}]}\n", env={}
    )
    assert cfg.plugins[0].config == {"limits": [{"rate": 5}]}


def test_bad_plugin_config_has_nested_path_and_line(reg: Registry) -> None:
    found = issues(
        UPSTREAMS
        + """\
routes:
  - name: a
    upstream: users
    plugins:
      - name: t_edge
      - name: t_limits
        config:
          key: ip
          limits:
            - rate: 10
            - rate: 0
              per: 1m
            - {rate: many}
          burst: 3
""",
        reg,
    )
    assert [str(i) for i in found] == [
        "routes[0].plugins[1].config.limits[1].rate (line 15): must be greater than 0 (got 0)",
        "routes[0].plugins[1].config.limits[2].rate (line 17): must be an integer (got 'many')",
        "routes[0].plugins[1].config.burst (line 18): unknown key 'burst'",
    ]


def test_plugin_config_validator_bug_is_an_issue(reg: Registry) -> None:
    issue = only("plugins:\n  - name: t_buggy\n    config: {x: 1}\n", reg)
    assert (issue.path, issue.line) == ("plugins[0].config", 3)
    assert "validator bug" in issue.message


def test_stage_order(reg: Registry) -> None:
    found = issues("plugins:\n  - name: t_limits\n  - name: t_edge\n  - name: t_authn\n", reg)
    issue = found[0]
    assert (issue.path, issue.line) == ("plugins[1].name", 3)
    assert issue.message.startswith(
        "plugin 't_edge' (stage edge) must come before 't_limits' (stage traffic)"
    )
    assert "edge < authn < authz < traffic < transform" in issue.message
    # the third plugin is also out of order relative to t_limits
    assert [i.line for i in found] == [3, 4]
    load("plugins:\n  - name: t_edge\n  - name: t_authn\n  - name: t_limits\n", reg)


def test_same_plugin_twice_in_one_list(reg: Registry) -> None:
    issue = only("plugins:\n  - name: t_edge\n  - name: t_authn\n  - name: t_edge\n", reg)
    assert str(issue) == (
        "plugins[2].name (line 4): plugin 't_edge' is bound twice in this list "
        "(first at plugins[0])"
    )


def test_route_and_global_lists_are_checked_separately(reg: Registry) -> None:
    cfg = load(
        UPSTREAMS
        + """\
plugins:
  - name: t_limits
routes:
  - name: a
    upstream: users
    plugins:
      - name: t_edge
      - name: t_limits
        config: {limits: [{rate: 1}]}
""",
        reg,
    )
    assert [b.name for b in cfg.routes[0].plugins] == ["t_edge", "t_limits"]


# -- environment substitution ----------------------------------------------------------------


def test_env_unset_is_an_error_with_path_and_line() -> None:
    issue = only(UPSTREAMS + "    host_header: ${HOST_MODE}\n")
    assert (issue.path, issue.line) == ("upstreams.users.host_header", 5)
    assert issue.message.startswith("environment variable 'HOST_MODE' is not set")


def test_env_values_defaults_and_escape() -> None:
    text = """\
    listeners:
      - address: "${BIND:-127.0.0.1}:${PORT}"
    server:
      via: ${VIA:-edge}
      debug_token: "$${NOT_A_VAR}"
      workers: ${WORKERS}
    admin:
      token: "pre-${EMPTY:-fallback}-${TOKEN}"
    """
    cfg = load(text, env={"PORT": "8081", "WORKERS": "3", "EMPTY": "", "TOKEN": "${PORT}"})
    assert cfg.listeners[0].address == "127.0.0.1:8081"
    assert cfg.server.via == "edge"
    assert cfg.server.debug_token == "${NOT_A_VAR}"
    assert cfg.server.workers == 3  # "3" is coerced by the schema
    # substituted text is not rescanned
    assert cfg.admin.token == "pre-fallback-${PORT}"


def test_env_malformed_references() -> None:
    found = issues("server:\n  via: ${UNCLOSED\n  debug_token: ${1BAD}\n")
    assert [(i.path, i.line) for i in found] == [("server.via", 2), ("server.debug_token", 3)]
    assert "unterminated" in found[0].message
    assert "invalid variable reference" in found[1].message


def test_env_error_does_not_echo_as_schema_error() -> None:
    issue = only(UPSTREAMS + "routes:\n  - name: a\n    upstream: ${UP}\n")
    assert issue.path == "routes[0].upstream"
    assert "'UP' is not set" in issue.message


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTWAY_TEST_VIA", "from-env")
    cfg = load_config_text("server:\n  via: ${PORTWAY_TEST_VIA}\n")
    assert cfg.server.via == "from-env"


# -- everything at once -------------------------------------------------------------------------


def test_all_errors_reported_at_once_in_line_order(reg: Registry) -> None:
    text = """\
    listeners:
      - address: nowhere
    server:
      trusted_proxies: [bad-cidr]
      limits: {header_timeout: forever}
    upstreams:
      users:
        targets:
          - url: http://127.0.0.1:9000
            wieght: 2
    routes:
      - name: a
        upstream: users
        match: {paths: [users]}
      - name: b
        upstream: accounts
        plugins:
          - name: t_limits
            config: {limits: [{rate: -1}]}
          - name: t_authn
      - name: a
        upstream: ${MISSING}
    """
    with pytest.raises(ConfigError) as info:
        load(text, reg)
    got = [(i.path, i.line) for i in info.value.errors]
    assert got == [
        ("listeners[0].address", 2),
        ("server.trusted_proxies[0]", 4),
        ("server.limits.header_timeout", 5),
        ("upstreams.users.targets[0].wieght", 10),
        ("routes[0].match.paths[0]", 14),
        ("routes[1].upstream", 16),
        ("routes[1].plugins[0].config.limits[0].rate", 19),
        ("routes[1].plugins[1].name", 20),
        ("routes[2].name", 21),
        ("routes[2].upstream", 22),
    ]
    text_out = str(info.value)
    assert text_out.startswith("<string>: 10 errors\n  listeners[0].address (line 2): ")
    assert "Traceback" not in text_out and "pydantic" not in text_out
    assert "did you mean 'weight'?" in text_out
    as_json = info.value.to_dict()
    assert as_json["errors"][0] == {
        "path": "listeners[0].address",
        "line": 2,
        "column": None,
        "message": "address must be HOST:PORT, got 'nowhere'",
    }


# -- files and hashing ----------------------------------------------------------------------------


def test_load_config_from_file(tmp_path: Path) -> None:
    p = tmp_path / "portway.yaml"
    p.write_text(UPSTREAMS + "routes:\n  - {name: a, upstream: users}\n")
    cfg = load_config(p)
    assert isinstance(cfg, GatewayConfig)
    assert cfg.routes[0].upstream == "users"
    p.write_text("routes: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(p))
    assert info.value.source == str(p)
    assert str(info.value).startswith(f"{p}: 1 error\n")


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the config file" in info.value.errors[0].message
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"server:\n  via: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert (info.value.errors[0].line, info.value.errors[0].message) == (
        2,
        "the config is not valid UTF-8",
    )


def test_config_hash_ignores_formatting_but_not_meaning() -> None:
    a = load(UPSTREAMS + "routes:\n  - {name: a, upstream: users}\n")
    b = load(
        """\
        # same config, other spelling
        routes:
          - upstream: users
            name: a
            strip_prefix: false
        upstreams:
          users: {targets: [{url: "http://127.0.0.1:9000", weight: 1}]}
        """
    )
    c = load(UPSTREAMS + "routes:\n  - {name: a, upstream: users, strip_prefix: true}\n")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert len(config_hash(a)) == 12
    int(config_hash(a), 16)


def test_rewrite_param_must_be_captured_by_every_path() -> None:
    route = (
        "routes:\n  - name: order\n    match: {paths: ['/orders/{id}', '=/orders']}\n"
        "    upstream: users\n    rewrite: /v2/orders/{id}\n"
    )
    issue = only(UPSTREAMS + route)
    assert str(issue) == (
        "routes[0].rewrite (line 9): rewrite uses {id}, which path '=/orders' does not "
        "capture; give that path its own route (with its own rewrite)"
    )
    ok = route.replace("'=/orders'", "'~^/o/(?P<id>[0-9]+)$'")
    assert load_config_text(UPSTREAMS + ok).routes[0].rewrite == "/v2/orders/{id}"


def test_dot_segment_names_are_refused_where_they_stand() -> None:
    # the admin API names routes, upstreams and consumers in URL paths, where "." and ".."
    # are removed (RFC 3986): such names could never be addressed
    found = issues(
        """\
        upstreams:
          "..":
            targets: [{url: "http://127.0.0.1:9"}]
        routes:
          - name: "."
            match: {paths: ["/"]}
            upstream: ".."
        consumers:
          - username: "."
        """
    )
    got = {(i.path, i.line, i.message) for i in found}
    assert got == {
        ('upstreams[".."]', 2, "an upstream name cannot be '..': no URL path can name it"),
        ("routes[0].name", 5, "a route name cannot be '.': no URL path can name it"),
        ("consumers[0].username", 9, "a consumer username cannot be '.': no URL path can name it"),
    }, [str(i) for i in found]
    assert load(UPSTREAMS.replace("users:", "'...':")).upstreams["..."]  # a name like any
