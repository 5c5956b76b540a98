"""Settings: every validation error has its exact one-line message; the key never shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talon_classic.exceptions import SettingsError
from talon_classic.settings import Settings, load_settings

KEY = "tk-SECRET-0123456789abcd"


def write(tmp_path: Path, doc, name: str = "settings.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def error(tmp_path: Path, doc, **kw) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, doc), env={}, **kw)
    message = str(info.value)
    assert "\n" not in message and KEY not in message
    return message


def test_classic_settings_load(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"apiKey": KEY, "applicationDomain": "https://demo.talon.one/",
                                       "customAttributes": ["email", "address_*", "email"]}), env={})
    assert s.application_domain == "https://demo.talon.one"  # trailing slash dropped
    assert s.custom_attributes == ("email", "address_*")
    assert s.api_key == KEY


def test_item_not_a_string(tmp_path: Path) -> None:
    assert error(tmp_path, {"customAttributes": ["a", "b", 3]}) == (
        "settings.json: customAttributes[2]: expected a string"
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


def test_unknown_key(tmp_path: Path) -> None:
    assert error(tmp_path, {"apikey": KEY}) == (
        "settings.json: apikey: unknown setting (expected apiKey, applicationDomain, "
        "deployment or customAttributes)"
    )


def test_not_an_object(tmp_path: Path) -> None:
    assert error(tmp_path, "[]") == "settings.json: (top level): expected an object"


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path / "missing.json", env={})
    assert str(info.value) == f"missing.json: file not found ({tmp_path / 'missing.json'})"


def test_invalid_json(tmp_path: Path) -> None:
    assert error(tmp_path, '{"apiKey": ') == (
        "settings.json: not valid JSON: Expecting value at line 1 column 12"
    )


def test_http_is_refused_for_a_real_host(tmp_path: Path) -> None:
    assert error(tmp_path, {"applicationDomain": "http://demo.talon.one"}) == (
        "settings.json: applicationDomain: must use https:// (plain http is allowed only for "
        "127.0.0.1, localhost and ::1)"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:8321", "http://localhost:1", "http://[::1]:9"])
def test_http_is_fine_on_loopback(tmp_path: Path, url: str) -> None:
    assert load_settings(write(tmp_path, {"applicationDomain": url}), env={}).application_domain == url


def test_not_a_url(tmp_path: Path) -> None:
    assert error(tmp_path, {"applicationDomain": "demo.talon.one"}) == (
        "settings.json: applicationDomain: must be an https:// URL such as "
        "https://mycompany.talon.one"
    )


@pytest.mark.parametrize("url", ["https://demo.talon.one/v2", "https://demo.talon.one/?a=1",
                                 "https://demo.talon.one/#x"])
def test_path_query_fragment_rejected(tmp_path: Path, url: str) -> None:
    assert error(tmp_path, {"applicationDomain": url}) == (
        "settings.json: applicationDomain: must be the deployment's base URL without a path "
        "(e.g. https://demo.talon.one)"
    )


def test_credentials_in_url_rejected(tmp_path: Path) -> None:
    assert error(tmp_path, {"applicationDomain": "https://u:p@demo.talon.one"}) == (
        "settings.json: applicationDomain: must not contain credentials"
    )


def test_deployment_alias(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"deployment": "https://x.europe-west1.talon.one"}), env={})
    assert s.application_domain == "https://x.europe-west1.talon.one"


def test_deployment_and_domain_disagree(tmp_path: Path) -> None:
    assert error(tmp_path, {"deployment": "https://a.talon.one",
                            "applicationDomain": "https://b.talon.one"}) == (
        "settings.json: deployment: differs from applicationDomain (give only one of them)"
    )


def test_key_with_whitespace(tmp_path: Path) -> None:
    assert error(tmp_path, {"apiKey": KEY + " "}) == (
        "settings.json: apiKey: has leading or trailing whitespace"
    )


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


def test_env_error_names_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={"TALON_APPLICATION_DOMAIN": "http://x.talon.one"})
    assert str(info.value).startswith("TALON_APPLICATION_DOMAIN: applicationDomain: must use https://")


def test_flag_error_names_the_flag() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={}, application_domain="ftp://x")
    assert str(info.value).startswith("--application-domain: applicationDomain:")


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


def test_key_never_in_repr(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"apiKey": KEY}), env={})
    assert KEY not in repr(s) and KEY not in str(s)
    assert "****abcd" in repr(s)
