"""Config of split / mirror / fallback / versions and fault_injection: bad values are
rejected at load with their YAML path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from portway.config.errors import ConfigError, ConfigIssue
from portway.config.loader import load_config_text

BASE = """\
upstreams:
  a: {targets: [{url: "http://127.0.0.1:9001"}]}
  b: {targets: [{url: "http://127.0.0.1:9002"}]}
routes:
  - name: r
    upstream: a
"""


def issues(extra: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + extra, "t.yaml", env={})
    return list(info.value.errors)


def one(extra: str) -> ConfigIssue:
    found = issues(extra)
    assert len(found) == 1, [str(i) for i in found]
    return found[0]


def test_unknown_upstreams_in_every_rule_are_reported_with_their_line() -> None:
    found = issues(
        "    split:\n"
        "      to: [{upstream: c, percent: 5}]\n"
        "      force: [{when: {headers: {x-canary: '1'}}, upstream: bb}]\n"
        "    mirror: {upstream: shadow}\n"
        "    fallback: {upstream: legacy}\n"
    )
    got = {(i.path, i.line): i.message for i in found}
    assert got[("routes[0].split.to[0].upstream", 8)].startswith("unknown upstream 'c'")
    assert got[("routes[0].split.force[0].upstream", 9)] == (
        "unknown upstream 'bb'; did you mean 'b'?"
    )
    assert ("routes[0].mirror.upstream", 10) in got
    assert ("routes[0].fallback.upstream", 11) in got
    v = one("    versions:\n      from: path\n      map:\n        '1': {upstream: zz}\n")
    assert (v.path, v.line) == ("routes[0].versions.map.1.upstream", 10)


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        (
            "    split: {to: [{upstream: b, percent: 60}, {upstream: a, percent: 50}]}\n",
            "routes[0].split.to",
            "more than 100",
        ),
        (
            "    split: {to: [{upstream: b, percent: 5.001}]}\n",
            "routes[0].split.to[0].percent",
            "two decimals",
        ),
        ("    split: {sticky: cookies:x}\n", "routes[0].split.sticky", "sticky must be"),
        ("    mirror: {upstream: b, sample: 2}\n", "routes[0].mirror.sample", "at most 1.0"),
        (
            "    fallback: {upstream: b, on: [101]}\n",
            "routes[0].fallback.on[0]",
            "not a final status",
        ),
        (
            "    versions: {from: cookie:v, map: {'1': {upstream: b}}}\n",
            "routes[0].versions.from",
            "from must be",
        ),
        (
            "    versions: {from: path, default: '3', map: {'1': {upstream: b}}}\n",
            "routes[0].versions",
            "default version '3'",
        ),
        (
            "    versions: {from: path, map: {'1': {upstream: b, link: 'a b'}}}\n",
            "routes[0].versions.map.1.link",
            "link must be",
        ),
        (
            "    split: {to: []}\n    versions: {from: path, map: {'1': {upstream: b}}}\n",
            "routes[0]",
            "split or versions",
        ),
        (
            "    plugins: [{name: fault_injection, config: {abort: {status: 503, percent: 150}}}]\n",
            "routes[0].plugins[0].config.abort.percent",
            "at most 100.0",
        ),
    ],
)
def test_bad_values(extra: str, path: str, words: str) -> None:
    issue = one(extra)
    assert issue.path == path, str(issue)
    assert words in issue.message, str(issue)
    assert issue.line is not None and issue.line >= 5


def test_the_documented_example_loads() -> None:
    text = (Path(__file__).resolve().parents[2] / "examples" / "traffic.yaml").read_text()
    cfg = load_config_text(text, "traffic.yaml", env={})
    r = {x.name: x for x in cfg.routes}
    assert r["checkout"].split is not None and r["checkout"].split.sticky == "cookie:pw_canary"
    versions = r["api"].versions
    assert versions is not None and versions.from_ == "header:api-version"
    # dumped by alias: the admin API's GET /config round-trips through PUT /config
    assert "from" in versions.model_dump(mode="json")
