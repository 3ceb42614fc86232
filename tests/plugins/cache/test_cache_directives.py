from __future__ import annotations

from portway.plugins.cache.directives import (
    DELTA_MAX,
    format_http_date,
    parse_age,
    parse_cache_control,
    parse_etags,
    parse_http_date,
    weak_match,
)


def test_first_of_duplicate_max_age_wins_same_line_and_separate_lines() -> None:
    assert parse_cache_control(["max-age=1800, max-age=1"]).seconds("max-age") == 1800
    assert parse_cache_control(["max-age=1", "max-age=1800"]).seconds("max-age") == 1


def test_quoted_string_hides_directives_and_quoted_value_is_accepted() -> None:
    d = parse_cache_control(['extension="max-age=3600", max-age=1'])
    assert d.seconds("max-age") == 1
    assert d.values["extension"] == "max-age=3600"
    assert parse_cache_control(['max-age="3600"']).seconds("max-age") == 3600


def test_malformed_members_are_ignored_or_flagged() -> None:
    assert not parse_cache_control(["max-age =3600"]).has("max-age")
    assert not parse_cache_control(["max-age= 3600"]).has("max-age")
    assert parse_cache_control(["max-age='3600'"]).seconds("max-age") == -1
    assert parse_cache_control(["max-age=3600a"]).seconds("max-age") == -1
    assert parse_cache_control(["max-age=3600.0"]).seconds("max-age") == -1
    assert parse_cache_control(["max-age=003600"]).seconds("max-age") == 3600
    assert parse_cache_control(["max-age=99999999999"]).seconds("max-age") == DELTA_MAX


def test_names_are_case_insensitive_and_empty_members_skipped() -> None:
    d = parse_cache_control([" , MAX-AGE=5 ,, No-Store"])
    assert d.seconds("max-age") == 5
    assert d.has("no-store")


def test_qualified_no_cache_and_private_collect_field_names() -> None:
    d = parse_cache_control(['no-cache="a, B"', 'private="c"', 'no-cache="d"'])
    assert d.field_names("no-cache") == {"a", "b", "d"}
    assert d.field_names("private") == {"c"}
    assert not d.bare("no-cache")
    both = parse_cache_control(['no-cache="a"', "no-cache"])
    assert both.bare("no-cache")


def test_http_dates_in_all_three_formats() -> None:
    ts = 784111777.0
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == ts
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == ts
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == ts
    assert parse_http_date(format_http_date(ts)) == ts


def test_invalid_dates() -> None:
    for bad in ("0", "-1", "", "Sun, 06 Nov 1994 08:49:37 PST", "Sun, 32 Nov 1994 08:49:37 GMT"):
        assert parse_http_date(bad) is None
    assert parse_http_date(None) is None


def test_age_parsing() -> None:
    assert parse_age(["7200"]) == 7200
    assert parse_age(["abc"]) == 0
    assert parse_age(["-7200"]) == 0
    assert parse_age(["0, 7200"]) == 0
    assert parse_age(["7200,0"]) == 7200
    assert parse_age(["7200", "0"]) == 7200
    assert parse_age([]) == 0


def test_etags() -> None:
    assert parse_etags(['"a", W/"b"', "junk"]) == ['"a"', 'W/"b"']
    assert parse_etags(["*"]) is None
    assert weak_match('W/"x"', '"x"')
    assert not weak_match('"x"', '"y"')
