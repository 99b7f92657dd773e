"""Reads the YAML config: finds the file, expands ${NAME}, validates, and names the key on error.

Errors are one line, ``<file>: <key path>: <problem>``, because the people reading them are
running a CLI or looking at a crash-looping pod, and the key is what they need to fix.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from numsync.errors import ConfigError

from .schema import Config

__all__ = ["find_config_path", "load_config", "parse_config"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_PATH = Path("numsync.yaml")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice: the later one would silently win."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain name, not a list or a mapping", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def find_config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Path:
    """--config, else $NUMSYNC_CONFIG, else ./numsync.yaml (the contract's order)."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("NUMSYNC_CONFIG"):
        return Path(env["NUMSYNC_CONFIG"])
    return DEFAULT_PATH


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _expand(node: Any, env: Mapping[str, str], where: tuple[Any, ...], origin: str) -> Any:
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{origin}: {_key_path(where)}: environment variable {name} is not set"
                )
            return env[name]

        return _VAR.sub(repl, node)
    if isinstance(node, dict):
        return {k: _expand(v, env, (*where, k), origin) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, env, (*where, i), origin) for i, v in enumerate(node)]
    return node


def _friendly(err: Any, raw: Any) -> tuple[str, str]:
    """Turn one pydantic error into (key path, message) in the words of the config file."""
    loc = tuple(err["loc"])
    # Discriminated unions add the tag ('twilio') to the path; the user never wrote it.
    if len(loc) >= 3 and loc[0] == "sources" and loc[2] in {"twilio", "telnyx", "vonage", "byo"}:
        loc = (*loc[:2], *loc[3:])
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = raw
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        hint = ""
        if isinstance(parent, dict):
            model_keys = _known_keys(loc)
            close = difflib.get_close_matches(str(loc[-1]), model_keys, n=1)
            if close:
                hint = f" (did you mean '{close[0]}'?)"
        return _key_path(loc), f"unknown key{hint}"
    if kind == "missing":
        return _key_path(loc), "required key is missing"
    if kind == "union_tag_invalid":
        return _key_path((*loc, "kind")), "kind must be one of twilio, telnyx, vonage, byo"
    if kind == "union_tag_not_found":
        return _key_path((*loc, "kind")), "required key is missing (twilio, telnyx, vonage or byo)"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    return _key_path(loc), msg


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    from . import schema

    model: Any = schema.Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if model is schema.Config and part == "sources" and len(loc) > 3:
            model = schema.TwilioSourceConfig  # the nested models (import) are shared by all kinds
            continue
        if model is schema.Config and part == "sources":
            return sorted(
                {
                    (f.alias or n)
                    for m in (
                        schema.TwilioSourceConfig,
                        schema.TelnyxSourceConfig,
                        schema.VonageSourceConfig,
                        schema.ByoSourceConfig,
                    )
                    for n, f in m.model_fields.items()
                }
            )
        field = model.model_fields.get(part)
        if field is None:
            if part == "import":
                field = model.model_fields.get("import_")
            if field is None:
                return []
        model = field.annotation
    fields = getattr(model, "model_fields", {})
    return [f.alias or n for n, f in fields.items()]


def parse_config(text: str, *, origin: str = "<config>", base_dir: Path | None = None,
                 env: Mapping[str, str] | None = None) -> Config:
    """Parse config text; ``base_dir`` anchors relative file paths (numbers_file, ca_bundle)."""
    env = os.environ if env is None else env
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{origin}: malformed YAML at {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: malformed YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # YAML's own constructors: an unquoted date that is not a date (2024-13-01), !!float abc ...
        raise ConfigError(f"{origin}: malformed YAML: a value cannot be read ({exc}); quote it") from None
    except RecursionError:
        raise ConfigError(f"{origin}: malformed YAML: nested too deeply (or an alias refers to itself)") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: (top level): expected a mapping of keys, got {type(raw).__name__}")
    try:
        raw = _expand(raw, env, (), origin)
    except RecursionError:
        raise ConfigError(f"{origin}: an alias refers to itself") from None
    names: dict[str, int] = {}
    sources = raw.get("sources")
    for i, src in enumerate(sources if isinstance(sources, list) else []):
        if isinstance(src, dict) and isinstance(src.get("name"), str):
            if src["name"] in names:
                raise ConfigError(
                    f"{origin}: sources[{i}].name: '{src['name']}' is already the name of sources[{names[src['name']]}]"
                )
            names[src["name"]] = i
    if env.get("NUMSYNC_DATABASE_URL"):
        raw["database_url"] = env["NUMSYNC_DATABASE_URL"]
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        key, msg = _friendly(exc.errors()[0], raw)
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{origin}: {key}: {msg}{suffix}") from None
    if base_dir is not None:
        cfg = _anchor_paths(cfg, base_dir)
    return cfg


def _anchor_paths(cfg: Config, base_dir: Path) -> Config:
    def anchor(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base_dir / p

    sources = []
    for src in cfg.sources:
        update: dict[str, Any] = {"ca_bundle": anchor(src.ca_bundle)}
        if src.kind == "byo":
            update["numbers_file"] = anchor(src.numbers_file)
        sources.append(src.model_copy(update=update))
    vapi = cfg.vapi.model_copy(update={"ca_bundle": anchor(cfg.vapi.ca_bundle)})
    return cfg.model_copy(update={"sources": sources, "vapi": vapi})


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the config the CLI would load: --config, $NUMSYNC_CONFIG or ./numsync.yaml."""
    env = os.environ if env is None else env
    cfg_path = find_config_path(path, env)
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{cfg_path}: config file not found (pass --config PATH or set NUMSYNC_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: cannot read config file: {exc.__class__.__name__}") from None
    return parse_config(text, origin=str(cfg_path), base_dir=cfg_path.resolve().parent, env=env)
