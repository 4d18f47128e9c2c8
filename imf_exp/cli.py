"""How every command starts: arguments, the config check, and one-line errors.

``train``, ``sample``, ``figures`` and ``report`` are Hydra apps (``conf/<command>.yaml``).
Before Hydra runs one (and creates any folder), :func:`run` composes its config from the
command line with Hydra's compose API, once per value of every swept key, and turns whatever
Hydra or OmegaConf reports into one line naming the key, the value and what is allowed (with a
"did you mean" for near misses), printed as ``Error: ...`` with exit code 2.

It also keeps the spellings users type: a leading folder (``python -m imf_exp.sample RUN n=10``)
becomes ``run=RUN``, and comma-separated values of list keys (``interval=0.2,0.9``,
``columns=a,b``) become lists instead of sweeps.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from imf_exp.errors import ConfigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
#: Hydra flags after which no check runs (they print and exit)
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion",
              "-sc", "--resolve")
#: optional config groups of train.yaml: Hydra skips a missing option silently, this does not
OPTIONAL_GROUPS = ("recipe", "launcher", "experiment", "contender", "hparams_search")


class UsageError(ConfigError):
    """A command line that cannot run; the message is one line."""


def normalize(argv: Sequence[str], positional: str | None = None, lists: Sequence[str] = (),
              strings: Sequence[str] = ()) -> list[str]:
    """The command line with the shorthands spelled out for Hydra: a first argument without
    ``=`` becomes ``positional=ARG``; ``key=a,b`` (or ``key=a``) becomes ``key=[a,b]`` for ``lists``; the values
    of ``strings`` are quoted (``class=null`` is the string ``null``, ``class=0.7,0.3`` one
    string); ``GROUP=null`` of an optional group (``recipe=null``) leaves the group out."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if positional and i == 0 and "=" not in arg and not arg.startswith("-"):
            arg = f"{positional}={_quote(arg)}"
        key, sep, value = arg.partition("=")
        if key in OPTIONAL_GROUPS and value == "null":
            out.append(f"~{key}")
            continue
        plain = sep and value[:1] not in "[('\"" and not value.startswith(("choice(", "range("))
        if plain and key in strings:
            arg = f"{key}='{value}'" if re.fullmatch(r"[\w.,\-+]*", value) else f"{key}={_quote(value)}"
        elif plain and key in lists and value not in ("null", ""):  # a,b or a single a
            arg = f"{key}=[{value}]"
        out.append(arg)
    return out


def _quote(value: str) -> str:
    if re.fullmatch(r"[\w./\-+:@]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _suggest(word: str, choices: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _full_key(err: BaseException) -> str | None:
    match = re.search(r"full_key: (\S+)", str(err))
    return match.group(1) if match else None


def _keys_at(cfg: DictConfig, path: str) -> list[str]:
    node = OmegaConf.select(cfg, path) if path else cfg
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _unknown_key(full_key: str, given: str, base: DictConfig | None) -> str:
    parent, _, leaf = full_key.rpartition(".")
    keys = _keys_at(base, parent) if base is not None else []
    where = parent or "the top level"
    hint = _suggest(leaf, keys, f"{parent}." if parent else "")
    listing = f"; keys of {where}: {', '.join(keys)}" if keys else ""
    return f"{given}: {full_key} is not a key of this config{hint}{listing}"


def _allowed(reason: str) -> str:
    """OmegaConf's validation message as what is allowed."""
    kinds = {"Integer": "an int", "Float": "a number", "Boolean": "true or false", "String": "a string"}
    match = re.search(r"could not be converted to (\w+)", reason)
    if match:
        return kinds.get(match.group(1), match.group(1))
    match = re.search(r"expected one of \[(.*)\]", reason)
    if match:
        return f"one of {match.group(1)}"
    if "is not a valid bool" in reason:
        return "true or false"
    if "is not a ListConfig, list or tuple" in reason:
        return "a list, e.g. [a,b]"
    if "is not a subclass of" in reason or "Cannot assign" in reason:
        return "a value of the key's type"
    return reason


def describe(err: BaseException, override: str | None, base: DictConfig | None) -> str:
    """One line for a composition error of the override ``override`` (None: not known)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = err.__cause__ or err
    given = override or "the command line"
    if isinstance(err, OverrideParseException):
        return f"cannot read {given!r}: {_first_line(err)} (see `--help` for the syntax)"
    if isinstance(err, MissingConfigException):
        match = re.search(r"Could not find '([^']+)/([^'/]+)'", str(err))
        if match:
            group, option = match.groups()
            options = [o for o in (err.options or []) if not o.endswith("_schema")]
            return (f"{group}={option}: no such option{_suggest(option, options)}; options: "
                    f"{', '.join(options)}")
        return _first_line(err)
    if "Ambiguous value for argument" in str(err):
        return (f"{given}: a comma-separated value is a sweep, which needs -m; a list is written "
                "key=[a,b], a string key='a,b'")
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and "not in" in str(cause):
        return _unknown_key(_full_key(cause) or given, given, base)
    if isinstance(cause, ValidationError):
        key = _full_key(cause) or given.split("=")[0]
        value = given.partition("=")[2] if override else "?"
        reason = _first_line(cause)
        match = re.search(r"Invalid value '([^']*)', expected one of \[(.*)\]", reason)
        hint = _suggest(match.group(1), match.group(2).split(", ")) if match else ""
        return f"{key}={value!r} is not allowed: {_allowed(reason)}{hint}"
    if isinstance(err, ConfigCompositionException):
        return f"{given}: {_first_line(cause)}"
    return f"{given}: {_first_line(err)}"


def _unread(cfg: DictConfig, added: Sequence[str]) -> str | None:
    """The first key added with ``+key=value`` that no schema declares (nothing would read it).
    Under a node without a schema (``dataset=custom``) any key is the user's own argument."""
    for key in added:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if dataclasses.is_dataclass(schema) and leaf not in {f.name for f in dataclasses.fields(schema)}:
            return key
    return None


def _parse(overrides: Sequence[str]) -> list:
    """Hydra's parse of each override; a syntax error names the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, parsed = OverridesParser.create(), []
    for item in overrides:
        try:
            parsed += parser.parse_overrides([item])
        except Exception as err:  # noqa: BLE001 - Hydra's parse errors: one line
            raise UsageError(describe(err, item, None)) from None
    return parsed


def _cases(parsed: list, multirun: bool) -> tuple[list[tuple[list[str], str | None]], dict]:
    """The command lines to compose: every sweep at its first value, then each other value of
    each swept key with the rest at their first values (one composition per value, not per job).
    Also the values of each swept key. Interval sweeps (Optuna) are the sweeper's to check."""
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        raise UsageError(describe(ValueError("Ambiguous value for argument"), sweeps[0].input_line, None))
    values: dict[str, list[str]] = {}
    for o in sweeps:
        try:
            values[o.input_line.split("=", 1)[0]] = list(o.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - interval/glob sweeps
            continue
    firsts = {k: v[0] for k, v in values.items() if v}
    cases = [(fixed + [f"{k}={v}" for k, v in firsts.items()], None)]
    for key, vals in values.items():
        for value in vals[1:]:
            others = [f"{k}={v}" for k, v in firsts.items() if k != key]
            cases.append((fixed + others + [f"{key}={value}"], f"{key}={value}"))
    return cases, values


def _check_optional_groups(loader, groups: list, values: dict) -> None:
    """Hydra skips a missing option of an optional group (``experiment=qualty``) silently."""
    for o in groups:
        if o.key_or_group not in OPTIONAL_GROUPS:
            continue
        options = loader.get_group_options(o.key_or_group)
        for value in values.get(o.input_line.split("=", 1)[0], [o.get_value_element_as_str()]):
            if value not in options and value != "null":
                raise UsageError(f"{o.key_or_group}={value}: no such option"
                                 f"{_suggest(value, options)}; options: {', '.join(options)}")


def _check_composed(cfg: DictConfig, case: Sequence[str], added: Sequence[str],
                    config_name: str, positional: str | None) -> None:
    """A composed config with a mandatory value missing, or a ``+key`` nothing reads."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and missing[0] == positional:
        raise UsageError(f"no {positional} folder given: python -m imf_exp.{config_name} "
                         f"FOLDER [key=value ...] (`--help` lists the keys)")
    if missing:
        raise UsageError(f"{missing[0]} is missing: give it on the command line "
                         f"({missing[0]}=...; `--help` shows the usage)")
    extra = _unread(cfg, added)
    if extra:
        given = next(c for c in case if c.lstrip("+").split("=")[0] == extra)
        parent, _, leaf = extra.rpartition(".")
        keys = [k for k in _keys_at(cfg, parent) if k != leaf]
        raise UsageError(f"{given}: {extra} is not a key of this config, so nothing "
                         f"would read it{_suggest(leaf, keys, f'{parent}.' if parent else '')}")


def check_command_line(config_name: str, overrides: Sequence[str], multirun: bool = False,
                       extra_check: Callable[[DictConfig], None] | None = None,
                       positional: str | None = None) -> DictConfig:
    """Compose ``config_name`` with ``overrides`` as Hydra will (for a sweep: once per value of
    each swept key) and return the first composed config. Raises :class:`UsageError` with one
    line for a composition error, an optional group's missing option, a missing mandatory value,
    a key no schema declares, or what ``extra_check(cfg)`` raises as :class:`ConfigError`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from imf_exp.config import register_configs

    register_configs()
    parsed = _parse(overrides)
    cases, values = _cases(parsed, multirun)
    added = [o.key_or_group for o in parsed if o.is_add() or o.is_force_add()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        known = set(loader.list_groups(""))
        groups = [o for o in parsed if o.key_or_group in known and not o.is_delete()]
        _check_optional_groups(loader, groups, values)
        try:  # the groups alone: the keys a "did you mean" chooses from
            base = compose(config_name, overrides=[o.input_line for o in groups
                                                   if not o.is_sweep_override()])
        except Exception:  # noqa: BLE001 - reported below, with the override that causes it
            base = None
        composed = []
        for case, label in cases:
            try:
                cfg = compose(config_name, overrides=case)
            except Exception as err:  # noqa: BLE001 - every composition error: one line
                raise UsageError(describe(err, label or _culprit(err, case), base)) from None
            _check_composed(cfg, case, added, config_name, positional)
            if extra_check is not None:
                try:
                    extra_check(cfg)
                except ConfigError as err:
                    prefix = f"{label}: " if label and label.split("=")[0] not in str(err) else ""
                    raise UsageError(prefix + str(err)) from None
            composed.append(cfg)
    GlobalHydra.instance().clear()
    return composed[0]


def _culprit(err: BaseException, case: Sequence[str]) -> str | None:
    """The override an error is about: the one Hydra names, or whose key the error's full key is."""
    text = f"{err} {err.__cause__ or ''}"
    for item in case:
        if f"'{item}'" in text or f"override {item}" in text or f"'{item.split('=')[0].lstrip('+~')}'" in text:
            return item
    full = _full_key(err.__cause__ or err)
    if full:
        for item in case:
            if item.split("=")[0].lstrip("+~") == full:
                return item
    return None


#: Hydra flags that take a value (``--info`` takes one of INFO_WORDS optionally)
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
               "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc")
INFO_WORDS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values) and the overrides, in order."""
    flags, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            flags.append(arg)
            takes = arg in VALUE_FLAGS or (arg in ("--info", "-i") and i + 1 < len(argv)
                                             and argv[i + 1] in INFO_WORDS)
            if takes and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return flags, rest


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with ``overrides`` as its command would compose it
    (for code that runs a command's work in-process: tests, the benchmark, the CUDA check)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from imf_exp.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def hydra_app(config_name: str, work: Callable[[DictConfig], object]) -> Callable[[], None]:
    """The Hydra main of a command that reads ``conf/<config_name>.yaml`` and calls
    ``work(cfg)``; a :class:`ConfigError` it raises is printed as one line, exit code 2."""
    import hydra

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
    def main(cfg: DictConfig) -> None:
        try:
            work(cfg)
        except ConfigError as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2)

    return main


def run(main: Callable[[], object], config_name: str, argv: Sequence[str] | None = None,
        positional: str | None = None, lists: Sequence[str] = (), strings: Sequence[str] = (),
        extra_check: Callable[[DictConfig], None] | None = None) -> None:
    """Check the command line, then hand it to the Hydra app ``main``; a bad command line
    prints ``Error: <one line>`` and exits with 2 before Hydra starts."""
    flags, rest = _split_flags(list(sys.argv[1:] if argv is None else argv))
    args = normalize(rest, positional, lists, strings)
    if not any(f.split("=")[0] in INFO_FLAGS for f in flags):
        try:
            check_command_line(config_name, args, multirun=bool({"-m", "--multirun"} & set(flags)),
                               extra_check=extra_check, positional=positional)
        except ConfigError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *flags, *args]
    main()
