"""Settings: every validation error has its exact one-line message; the key never shows.

Messages are ``"{source}: {field}: {problem}"`` where ``source`` is the file's
name, the environment variable or the flag the bad value came from. The
environment is always passed explicitly (``env={...}``), never read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from talon_classic.exceptions import SettingsError
from talon_classic.settings import Settings, check_secret, load_settings

KEY = "tk-SECRET-0123456789abcd"
UNKNOWN = (
    "unknown setting (expected apiKey, applicationDomain, deployment, customAttributes, "
    "managementKey, engageAudiences or audienceIds)"
)
HTTP_REFUSED = (
    "must use https:// (plain http is allowed only for loopback hosts: localhost, 127.0.0.0/8 and ::1)"
)


def write(tmp_path: Path, doc: Any, name: str = "settings.json") -> Path:
    """Write ``doc`` (JSON-encoded unless it is already text) to a settings file."""
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def message(**kwargs: Any) -> str:
    """The one-line SettingsError message ``load_settings(**kwargs)`` raises."""
    kwargs.setdefault("env", {})
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    text = str(info.value)
    assert "\n" not in text and KEY not in text
    return text


def error(tmp_path: Path, doc: Any, **kwargs: Any) -> str:
    """The message for a settings file holding ``doc``."""
    return message(path=write(tmp_path, doc), **kwargs)


# --- a good file ---------------------------------------------------------------------------


def test_classic_settings_load(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"apiKey": KEY, "applicationDomain": "https://demo.talon.one/",
                                       "customAttributes": ["email", "address_*", "email"]}), env={})
    assert s.application_domain == "https://demo.talon.one"
    assert s.custom_attributes == ("email", "address_*")  # duplicates dropped, order kept
    assert s.api_key == KEY


def test_the_bundled_sample_loads() -> None:
    sample = Path(__file__).resolve().parents[1] / "samples" / "settings.json"
    s = load_settings(sample, env={})
    assert s.application_domain == "https://demo.talon.one"
    assert "email" in s.custom_attributes and "consent_*" in s.custom_attributes


# --- schema errors -------------------------------------------------------------------------


def test_item_not_a_string(tmp_path: Path) -> None:
    assert error(tmp_path, {"customAttributes": ["a", "b", 3]}) == (
        "settings.json: customAttributes[2]: expected a string"
    )


def test_first_bad_item_is_named(tmp_path: Path) -> None:
    assert error(tmp_path, {"customAttributes": ["a", {"x": 1}, 2]}) == (
        "settings.json: customAttributes[1]: expected a string"
    )


def test_attributes_not_an_array(tmp_path: Path) -> None:
    assert error(tmp_path, {"customAttributes": "email"}) == (
        "settings.json: customAttributes: expected an array"
    )


def test_empty_attribute_name(tmp_path: Path) -> None:
    assert error(tmp_path, {"customAttributes": [""]}) == (
        "settings.json: customAttributes[0]: must not be empty"
    )


def test_api_key_not_a_string(tmp_path: Path) -> None:
    assert error(tmp_path, {"apiKey": 12345}) == "settings.json: apiKey: expected a string"


def test_api_key_null(tmp_path: Path) -> None:
    assert error(tmp_path, {"apiKey": None}) == "settings.json: apiKey: expected a string"


def test_api_key_empty(tmp_path: Path) -> None:
    assert error(tmp_path, {"apiKey": ""}) == "settings.json: apiKey: must not be empty"


def test_deployment_not_a_string(tmp_path: Path) -> None:
    assert error(tmp_path, {"deployment": 5}) == "settings.json: deployment: expected a string"


def test_unknown_key(tmp_path: Path) -> None:
    assert error(tmp_path, {"apikey": KEY}) == f"settings.json: apikey: {UNKNOWN}"


def test_unknown_key_next_to_good_ones(tmp_path: Path) -> None:
    assert error(tmp_path, {"apiKey": KEY, "custom_attributes": []}) == (
        f"settings.json: custom_attributes: {UNKNOWN}"
    )


def test_not_an_object(tmp_path: Path) -> None:
    assert error(tmp_path, "[]") == "settings.json: (top level): expected an object"


# --- the file itself -----------------------------------------------------------------------


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert message(path=missing) == f"missing.json: file not found ({missing})"


def test_invalid_json(tmp_path: Path) -> None:
    assert error(tmp_path, '{"apiKey": ') == (
        "settings.json: not valid JSON: Expecting value: column 12"
    )


def test_invalid_json_does_not_echo_the_key(tmp_path: Path) -> None:
    assert error(tmp_path, '{"apiKey": "' + KEY + '",}') == (
        "settings.json: not valid JSON: Expecting property name enclosed in double quotes: "
        "column 39"
    )


def test_empty_file(tmp_path: Path) -> None:
    assert error(tmp_path, "") == "settings.json: not valid JSON: Expecting value: column 1"


def test_invalid_json_on_a_later_line_names_the_line(tmp_path: Path) -> None:
    assert error(tmp_path, '{\n  "apiKey": \n}') == (
        "settings.json: not valid JSON: Expecting value: line 3 column 1"
    )


def test_a_deeply_nested_file_is_one_line(tmp_path: Path) -> None:
    depth = 100_000
    doc = '{"audienceIds": ' + "[" * depth + "]" * depth + "}"
    assert error(tmp_path, doc) == (
        "settings.json: not valid JSON: nested too deeply (more than 512 levels)"
    )


def test_an_integer_of_5000_digits_is_one_line(tmp_path: Path) -> None:
    assert error(tmp_path, '{"audienceIds": {"vip": ' + "9" * 5000 + "}}") == (
        "settings.json: audienceIds.vip: expected a Talon.One audience id (at most "
        "9223372036854775807, 2**63 - 1)"
    )
    assert error(tmp_path, '{"apiKey": ' + "9" * 5000 + "}") == (
        "settings.json: apiKey: expected a string"
    )


def test_a_file_over_1_mb_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = write(tmp_path, '{"customAttributes": ["' + "a" * 1_000_000 + '"]}')
    assert message(path=big) == (
        "settings.json: too large (more than 1,000,000 bytes): is it the settings file?"
    )


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_as_too_large() -> None:
    assert message(path="/dev/zero") == (
        "zero: too large (more than 1,000,000 bytes): is it the settings file?"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(b'{"apiKey": "\xff"}')
    assert message(path=path) == "settings.json: cannot read: UnicodeDecodeError"


# --- applicationDomain ---------------------------------------------------------------------


def test_http_is_refused_for_a_real_host(tmp_path: Path) -> None:
    assert error(tmp_path, {"applicationDomain": "http://demo.talon.one"}) == (
        f"settings.json: applicationDomain: {HTTP_REFUSED}"
    )


def test_http_is_refused_for_any_address(tmp_path: Path) -> None:
    assert error(tmp_path, {"applicationDomain": "http://0.0.0.0:8321"}) == (
        f"settings.json: applicationDomain: {HTTP_REFUSED}"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:8321", "http://localhost:1", "http://[::1]:9",
                                 "http://localhost"])
def test_http_is_fine_on_loopback(tmp_path: Path, url: str) -> None:
    assert load_settings(write(tmp_path, {"applicationDomain": url}), env={}).application_domain == url


@pytest.mark.parametrize(("given", "kept"), [
    ("https://demo.talon.one/", "https://demo.talon.one"),
    ("https://demo.talon.one//", "https://demo.talon.one"),
    ("https://Demo.Talon.One/", "https://demo.talon.one"),
    ("  https://demo.talon.one  ", "https://demo.talon.one"),
    ("http://LOCALHOST:8321/", "http://localhost:8321"),
])
def test_domain_is_normalised(tmp_path: Path, given: str, kept: str) -> None:
    assert load_settings(write(tmp_path, {"applicationDomain": given}),
                         env={}).application_domain == kept


@pytest.mark.parametrize("url", ["demo.talon.one", "ftp://demo.talon.one", "https://"])
def test_not_an_https_url(tmp_path: Path, url: str) -> None:
    assert error(tmp_path, {"applicationDomain": url}) == (
        "settings.json: applicationDomain: must be an https:// URL such as "
        "https://mycompany.talon.one"
    )


def test_bad_port(tmp_path: Path) -> None:
    assert error(tmp_path, {"applicationDomain": "https://demo.talon.one:abc"}) == (
        "settings.json: applicationDomain: not a valid URL"
    )


@pytest.mark.parametrize("url", ["https://demo.talon.one/v2", "https://demo.talon.one/v1/"])
def test_path_rejected(tmp_path: Path, url: str) -> None:
    assert error(tmp_path, {"applicationDomain": url}) == (
        "settings.json: applicationDomain: must be the deployment's base URL without a path "
        "(e.g. https://demo.talon.one)"
    )


@pytest.mark.parametrize("url", ["https://demo.talon.one/?a=1", "https://demo.talon.one?a=1",
                                 "https://demo.talon.one/#x"])
def test_query_and_fragment_rejected(tmp_path: Path, url: str) -> None:
    assert error(tmp_path, {"applicationDomain": url}) == (
        "settings.json: applicationDomain: must be the deployment's base URL without a path "
        "(e.g. https://demo.talon.one)"
    )


def test_credentials_in_url_rejected(tmp_path: Path) -> None:
    assert error(tmp_path, {"applicationDomain": f"https://u:{KEY}@demo.talon.one"}) == (
        "settings.json: applicationDomain: must not contain credentials"
    )


# --- deployment alias ----------------------------------------------------------------------


def test_deployment_alias(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"deployment": "https://x.europe-west1.talon.one"}), env={})
    assert s.application_domain == "https://x.europe-west1.talon.one"


def test_deployment_alias_is_validated_as_the_domain(tmp_path: Path) -> None:
    assert error(tmp_path, {"deployment": "http://x.talon.one"}) == (
        f"settings.json: applicationDomain: {HTTP_REFUSED}"
    )


def test_deployment_and_domain_agreeing_up_to_a_slash(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"deployment": "https://a.talon.one/",
                                       "applicationDomain": "https://a.talon.one"}), env={})
    assert s.application_domain == "https://a.talon.one"


def test_deployment_and_domain_disagree(tmp_path: Path) -> None:
    assert error(tmp_path, {"deployment": "https://a.talon.one",
                            "applicationDomain": "https://b.talon.one"}) == (
        "settings.json: deployment: differs from applicationDomain (give only one of them)"
    )


# --- the API key ---------------------------------------------------------------------------


def test_key_with_whitespace(tmp_path: Path) -> None:
    assert error(tmp_path, {"apiKey": KEY + " "}) == (
        "settings.json: apiKey: has leading or trailing whitespace"
    )


def test_key_with_a_newline_from_the_environment() -> None:
    assert message(env={"TALON_API_KEY": KEY + "\n"}) == (
        "TALON_API_KEY: apiKey: has leading or trailing whitespace"
    )


# Two halves, so a test can tell that no part of a key with a bad character in the middle shows.
FIRST, SECOND = "tk-LEAKFIRST-0123", "LEAKSECOND-4567"
CONTROL = ("{source}: apiKey: contains a control character (a newline or a tab?); "
           "copy it again")
NON_ASCII = ("{source}: apiKey: contains a non-ASCII character (an invisible space or a "
             "typographic quote from a web page?); copy it again")


def assert_hidden(text: str) -> None:
    assert "LEAK" not in text and "0123" not in text and "4567" not in text


@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\x7f", "\t", "\x1b", "\x85"])
def test_key_with_a_control_character_is_refused_from_every_source(
    tmp_path: Path, char: str
) -> None:
    key = FIRST + char + SECOND
    # json.dumps escapes the character, as a settings file must (raw controls are not JSON)
    for text, source in [
        (error(tmp_path, {"apiKey": key}), "settings.json"),
        (message(env={"TALON_API_KEY": key}), "TALON_API_KEY"),
        (message(api_key=key), "--api-key"),
        (message(env={"TALON_API_KEY": KEY}, api_key=key), "--api-key"),
    ]:
        assert text == CONTROL.format(source=source)
        assert_hidden(text)


@pytest.mark.parametrize("char", ["\u200b", "\xa0", "\u2028", "\u201c", "é"])
def test_key_with_a_non_ascii_character_is_refused(tmp_path: Path, char: str) -> None:
    key = FIRST + char + SECOND
    text = error(tmp_path, {"apiKey": key})
    assert text == NON_ASCII.format(source="settings.json")
    assert_hidden(text)
    assert message(env={"TALON_API_KEY": key}) == NON_ASCII.format(source="TALON_API_KEY")


def test_the_refusal_is_raised_without_a_chain() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={}, api_key=FIRST + "\n" + SECOND)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert_hidden(repr(info.value))


def test_check_secret_is_the_one_check_for_every_secret() -> None:
    assert check_secret(KEY, "writeKey", "--write-key") == KEY
    assert check_secret("a passphrase with spaces", "webhookSecret", "x") == (
        "a passphrase with spaces"
    )
    cases = [
        ("", "must not be empty"),
        (" " + KEY, "has leading or trailing whitespace"),
        (KEY + "\n", "has leading or trailing whitespace"),
        (FIRST + "\n" + SECOND, "contains a control character (a newline or a tab?); "
                                "copy it again"),
        (FIRST + "\u200b" + SECOND, "contains a non-ASCII character (an invisible space or a "
                                    "typographic quote from a web page?); copy it again"),
    ]
    for value, problem in cases:
        with pytest.raises(SettingsError) as info:
            check_secret(value, "writeKey", "TALON_WRITE_KEYS")
        assert str(info.value) == f"TALON_WRITE_KEYS: writeKey: {problem}"
        assert_hidden(str(info.value))
    with pytest.raises(SettingsError, match="^s: webhookSecret: expected a string$"):
        check_secret(12345, "webhookSecret", "s")  # type: ignore[arg-type]


def test_check_secret_may_allow_non_ascii_but_never_controls() -> None:
    assert check_secret("geheim-schlüssel", "webhookSecret", "x", allow_non_ascii=True) == (
        "geheim-schlüssel"
    )
    with pytest.raises(SettingsError, match="control character"):
        check_secret("geheim\nschlüssel", "webhookSecret", "x", allow_non_ascii=True)


def test_empty_key_flag() -> None:
    assert message(api_key="") == "--api-key: apiKey: must not be empty"


def test_key_never_in_repr(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"apiKey": KEY}), env={})
    assert KEY not in repr(s) and KEY not in str(s)
    assert repr(s) == (
        "Settings(api_key='****abcd', application_domain=None, custom_attributes=[])"
    )


def test_short_key_is_fully_hidden() -> None:
    assert "api_key='****'" in repr(Settings(api_key="short"))
    assert "api_key='<unset>'" in repr(Settings())


@pytest.mark.parametrize("doc", [
    {"apiKey": KEY, "applicationDomain": "http://demo.talon.one"},
    {"apiKey": KEY, "applicationDomain": KEY},
    {"apiKey": KEY, "applicationDomain": f"https://demo.talon.one/{KEY}"},
    {"apiKey": KEY, "applicationDomain": f"https://demo.talon.one/?key={KEY}"},
    {"apiKey": KEY, "deployment": f"https://{KEY}.talon.one", "applicationDomain": "https://x"},
    {"apiKey": KEY, "customAttributes": [KEY, 1]},
    {"apiKey": KEY, "customAttributes": KEY},
    {"apiKey": " " + KEY},
    {"apiKey": KEY, "surprise": KEY},
])
def test_key_never_in_an_error_message(tmp_path: Path, doc: dict[str, Any]) -> None:
    error(tmp_path, doc)  # ``message`` asserts KEY is absent


def test_key_never_in_an_error_from_env_or_flags() -> None:
    message(env={"TALON_API_KEY": KEY, "TALON_APPLICATION_DOMAIN": KEY})
    message(env={}, api_key=KEY, application_domain=f"http://{KEY}.example.com")
    message(env={}, api_key=f"\t{KEY}")


# --- sources and their priority ------------------------------------------------------------


@pytest.mark.parametrize(("var", "value", "field", "want"), [
    ("TALON_API_KEY", "env-key", "api_key", "env-key"),
    ("TALON_APPLICATION_DOMAIN", "https://env.talon.one/", "application_domain",
     "https://env.talon.one"),
    ("TALON_CUSTOM_ATTRIBUTES", " a, b ,,c,a", "custom_attributes", ("a", "b", "c")),
])
def test_each_environment_variable_overrides_the_file(
    tmp_path: Path, var: str, value: str, field: str, want: Any
) -> None:
    path = write(tmp_path, {"apiKey": "file-key", "applicationDomain": "https://file.talon.one",
                            "customAttributes": ["file"]})
    s = load_settings(path, env={var: value})
    assert getattr(s, field) == want
    untouched = {"api_key": "file-key", "application_domain": "https://file.talon.one",
                 "custom_attributes": ("file",)}
    del untouched[field]
    assert {f: getattr(s, f) for f in untouched} == untouched


def test_empty_environment_variables_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, {"apiKey": "file-key", "applicationDomain": "https://file.talon.one"})
    s = load_settings(path, env={"TALON_API_KEY": "", "TALON_APPLICATION_DOMAIN": ""})
    assert (s.api_key, s.application_domain) == ("file-key", "https://file.talon.one")


def test_environment_alone_is_enough() -> None:
    s = load_settings(env={"TALON_API_KEY": "env-key",
                           "TALON_APPLICATION_DOMAIN": "http://127.0.0.1:8321",
                           "TALON_CUSTOM_ATTRIBUTES": "email"})
    assert (s.api_key, s.application_domain, s.custom_attributes) == (
        "env-key", "http://127.0.0.1:8321", ("email",))


def test_priority_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, {"apiKey": "file-key", "applicationDomain": "https://file.talon.one",
                            "customAttributes": ["file"]})
    env = {"TALON_API_KEY": "env-key", "TALON_APPLICATION_DOMAIN": "https://env.talon.one",
           "TALON_CUSTOM_ATTRIBUTES": "a, b ,,c"}
    s = load_settings(path, env=env)
    assert (s.api_key, s.application_domain, s.custom_attributes) == (
        "env-key", "https://env.talon.one", ("a", "b", "c"))
    s = load_settings(path, env=env, api_key="flag-key", application_domain="https://flag.talon.one",
                      custom_attributes=["flag"])
    assert (s.api_key, s.application_domain, s.custom_attributes) == (
        "flag-key", "https://flag.talon.one", ("flag",))


def test_a_bad_file_value_is_reported_even_when_env_overrides_it(tmp_path: Path) -> None:
    """The file is checked on its own first: the environment does not hide its mistakes."""
    assert error(tmp_path, {"apiKey": 1}, env={"TALON_API_KEY": "env-key"}) == (
        "settings.json: apiKey: expected a string"
    )


def test_flag_overrides_a_bad_environment_domain() -> None:
    s = load_settings(env={"TALON_APPLICATION_DOMAIN": "http://x.talon.one"},
                      application_domain="https://y.talon.one")
    assert s.application_domain == "https://y.talon.one"


def test_env_error_names_the_variable() -> None:
    assert message(env={"TALON_APPLICATION_DOMAIN": "http://x.talon.one"}) == (
        f"TALON_APPLICATION_DOMAIN: applicationDomain: {HTTP_REFUSED}"
    )


def test_flag_errors_name_the_flag() -> None:
    assert message(application_domain="ftp://x") == (
        "--application-domain: applicationDomain: must be an https:// URL such as "
        "https://mycompany.talon.one"
    )
    assert message(custom_attributes=["ok", ""]) == (
        "--custom-attribute: customAttributes[1]: must not be empty"
    )


# --- require_delivery ----------------------------------------------------------------------


def test_require_delivery_messages() -> None:
    with pytest.raises(SettingsError) as info:
        Settings().require_delivery("s.json")
    assert str(info.value) == (
        "s.json: apiKey: missing (set it in the settings file, TALON_API_KEY or --api-key)"
    )
    with pytest.raises(SettingsError) as info:
        Settings(api_key=KEY).require_delivery("s.json")
    assert str(info.value) == (
        "s.json: applicationDomain: missing (set it in the settings file, "
        "TALON_APPLICATION_DOMAIN or --application-domain)"
    )
    assert KEY not in str(info.value)


def test_require_delivery_default_source_and_success() -> None:
    with pytest.raises(SettingsError) as info:
        Settings().require_delivery()
    assert str(info.value).startswith("settings: apiKey: missing")
    Settings(api_key=KEY, application_domain="https://demo.talon.one").require_delivery()


def test_unknown_setting_that_looks_like_a_secret_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({KEY: "x"}))
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    assert KEY not in str(info.value)
    assert str(info.value) == (
        "settings.json: (unknown name, not shown): unknown setting (expected apiKey, "
        "applicationDomain, deployment, customAttributes, managementKey, engageAudiences or "
        "audienceIds)"
    )


def test_deployment_equal_to_domain_after_normalising(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"deployment": "https://A.talon.one/",
                                "applicationDomain": " https://a.talon.one"}))
    assert load_settings(path, env={}).application_domain == "https://a.talon.one"


def test_env_attributes_of_only_separators() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={"TALON_CUSTOM_ATTRIBUTES": " , ,"})
    assert str(info.value) == (
        "TALON_CUSTOM_ATTRIBUTES: customAttributes: no attribute names in it "
        "(comma-separated, e.g. email,plan); unset it to use the file's list"
    )


# --- the management key (issue 13): a second secret, handled like the API key -------------
MKEY = "mk-SECRET-9876543210wxyz"


def test_management_key_from_file_env_and_flag(tmp_path: Path) -> None:
    path = write(tmp_path, {"apiKey": KEY, "managementKey": MKEY})
    assert load_settings(path, env={}).management_key == MKEY
    assert load_settings(path, env={"TALON_MANAGEMENT_KEY": "env-mkey"}).management_key == "env-mkey"
    assert load_settings(path, env={"TALON_MANAGEMENT_KEY": "env-mkey"},
                         management_key="flag-mkey").management_key == "flag-mkey"
    assert load_settings(env={}).management_key is None


def test_management_key_never_in_repr(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"apiKey": KEY, "managementKey": MKEY}), env={})
    assert MKEY not in repr(s) and MKEY not in str(s)
    assert repr(s) == ("Settings(api_key='****abcd', application_domain=None, "
                       "custom_attributes=[], management_key='****wxyz')")


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"env": {"TALON_MANAGEMENT_KEY": MKEY + " "}},
     "TALON_MANAGEMENT_KEY: managementKey: has leading or trailing whitespace"),
    ({"management_key": ""}, "--management-key: managementKey: must not be empty"),
    ({"management_key": f"\t{MKEY}"}, "--management-key: managementKey: has leading or trailing whitespace"),
])
def test_bad_management_keys(kwargs: dict[str, Any], expected: str) -> None:
    text = message(**kwargs)
    assert text == expected and MKEY not in text


def test_management_key_type_in_file(tmp_path: Path) -> None:
    assert error(tmp_path, {"managementKey": 7}) == "settings.json: managementKey: expected a string"


# -- engageAudiences and audienceIds -------------------------------------------------------
def test_engage_audiences_defaults_to_the_classic_attributes() -> None:
    settings = load_settings(env={})
    assert settings.engage_audiences == "attributes" and settings.audience_ids == {}


def test_engage_audiences_from_file_env_and_flag_in_that_order(tmp_path: Path) -> None:
    path = write(tmp_path, {"engageAudiences": "both", "audienceIds": {"aud_1": 12, "vip": 7.0}})
    from_file = load_settings(path, env={})
    assert from_file.engage_audiences == "both"
    assert from_file.audience_ids == {"aud_1": 12, "vip": 7}
    assert type(from_file.audience_ids["vip"]) is int
    from_env = load_settings(path, env={"TALON_ENGAGE_AUDIENCES": "memberships"})
    assert from_env.engage_audiences == "memberships"
    from_flag = load_settings(path, env={"TALON_ENGAGE_AUDIENCES": "memberships"},
                              engage_audiences="attributes")
    assert from_flag.engage_audiences == "attributes"
    assert "engage_audiences='both'" in repr(from_file) and "'aud_1': 12" in repr(from_file)


@pytest.mark.parametrize(("doc", "env", "message"), [
    ({"engageAudiences": "member"}, {},
     "settings.json: engageAudiences: expected one of attributes, memberships, both"),
    ({}, {"TALON_ENGAGE_AUDIENCES": "yes"},
     "TALON_ENGAGE_AUDIENCES: engageAudiences: expected one of attributes, memberships, both"),
    ({"audienceIds": {"aud_1": "12"}}, {}, "settings.json: audienceIds.aud_1: expected an integer"),
    ({"audienceIds": {"aud_1": True}}, {}, "settings.json: audienceIds.aud_1: expected an integer"),
    ({"audienceIds": {"aud_1": 0}}, {},
     "settings.json: audienceIds.aud_1: expected a Talon.One audience id (a whole number, 1 or "
     "more)"),
    ({"audienceIds": {"aud_1": 2**63}}, {},
     "settings.json: audienceIds.aud_1: expected a Talon.One audience id (at most "
     "9223372036854775807, 2**63 - 1)"),
    ({"audienceIds": {"": 3}}, {}, "settings.json: audienceIds: must not be empty"),
    ({"audienceIds": [3]}, {}, "settings.json: audienceIds: expected an object"),
])
def test_bad_engage_settings_are_one_line(tmp_path: Path, doc: Any, env: dict[str, str],
                                          message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, doc), env=env)
    assert str(info.value) == message


def test_a_settings_file_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    """Found by an adversarial pass: Notepad's BOM was refused ("Unexpected UTF-8 BOM"),
    though event files with one are read."""
    path = tmp_path / "settings.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"customAttributes": ["plan"]}).encode())
    assert load_settings(path, env={}).custom_attributes == ("plan",)
