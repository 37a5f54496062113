"""Property: the TOML and the YAML rendering of one generated site load to equal models."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserve.config.load import ConfigError, load_text

_names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_ident = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_seconds = st.one_of(st.integers(1, 3600), st.floats(0.5, 3600, allow_nan=False, allow_infinity=False))
_bind = st.one_of(
    st.builds("127.0.0.1:{}".format, st.integers(0, 65535)),
    st.builds("tcp://[::1]:{}".format, st.integers(0, 65535)),
    st.builds("unix:{}.sock".format, _ident),
)
_app = st.fixed_dictionaries(
    {"module": st.builds("{}.{}:app".format, _ident, _ident), "binds": st.lists(_bind, min_size=1, max_size=3)},
    optional={
        "workers": st.integers(1, 1024),
        "worker_class": st.just("gevent"),
        "timeout": _seconds,
        "max_surge": st.one_of(st.integers(1, 1024), st.builds("{}%".format, st.integers(1, 100))),
        "keepalive": st.floats(0, 3600, allow_nan=False, allow_infinity=False),
        "unix_socket_mode": st.sampled_from(["0600", "0660", "644"]),
        "chdir": _ident,
        "pythonpath": st.lists(_ident, max_size=2),
        "env": st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True), _ident, max_size=3),
    },
)
_server = st.fixed_dictionaries(
    {},
    optional={
        "graceful_timeout": _seconds,
        "log_level": st.sampled_from(["debug", "info", "error"]),
        "access_log": st.one_of(st.just(False), st.just("-"), _ident),
        "watch": st.booleans(),
    },
)
_site = st.fixed_dictionaries(
    {"apps": st.dictionaries(_names, _app, min_size=1, max_size=3)}, optional={"server": _server}
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value) if not isinstance(value, float) else repr(value)


def to_toml(site: dict[str, Any]) -> str:
    lines = []
    if "server" in site:
        lines += ["[server]", *(f"{k} = {_toml_value(v)}" for k, v in site["server"].items())]
    for name, app in site["apps"].items():
        lines += [f'[apps."{name}"]', *(f"{k} = {_toml_value(v)}" for k, v in app.items())]
    return "\n".join(lines) + "\n"


def _outcome(text: str, path: str) -> Any:
    """The model, or (for generated sites that share a bind) the problems without their line numbers."""
    try:
        return load_text(text.encode(), path)
    except ConfigError as err:
        return sorted((d.path, d.message) for d in err.diagnostics)


@settings(max_examples=40, deadline=None)
@given(site=_site, flow=st.booleans())
def test_toml_and_yaml_renderings_load_equal(site: dict[str, Any], flow: bool) -> None:
    from_toml = _outcome(to_toml(site), "/srv/site/site.toml")
    from_yaml = _outcome(yaml.safe_dump(site, default_flow_style=flow, sort_keys=False), "/srv/site/site.yaml")
    assert from_toml == from_yaml
    if not isinstance(from_toml, list):
        assert set(from_toml.apps) == set(site["apps"])
