"""Flags from a TOML file and PIPELINE_* variables, not only the command line.

A service runs `pipeline start --config /etc/pipeline/sensor.toml`: the file holds
what an operator would otherwise type, and the environment (systemd's
Environment=, a container's -e) overrides single values without editing it.
Everything is derived from the argparse parser itself, so a new flag gets its
file key and its variable for free and both go through the flag's own `type=`
and `choices`: a value is accepted in the file exactly when it is accepted on
the command line.

Precedence, highest first: flags on the command line > environment > file >
the parser's defaults. A layer replaces a lower one's value wholesale, lists
included (`--output` on the command line drops the file's outputs).

File: one table per subcommand (`[sensor]` for `pipeline start`,
`[collector]` for `pipeline collector`: see SECTIONS). A key is the long flag
without its dashes (`idle-timeout`; `idle_timeout` is accepted too). Values:
strings or numbers for flags taking a value (`workers = 4`, `workers = "auto"`),
booleans for switches (`quiet = true` is `--quiet`), arrays for repeatable flags
(`output = ["jsonl:/var/log/pipeline/sessions.jsonl"]`).

Environment: PIPELINE_ + the flag's name in capitals, dashes as underscores
(PIPELINE_IDLE_TIMEOUT). Repeatable flags: items separated by newlines, or by
commas when the value has no newline (PIPELINE_OUTPUT=jsonl:a.jsonl,jsonl:b.jsonl).
Switches: 1/true/yes/on or 0/false/no/off. An empty variable counts as unset;
variables naming no flag of the command are ignored (one environment may serve
several commands). The file is `--config FILE`, else $PIPELINE_CONFIG.

`load` reads the file; everything else here is pure (no I/O), and errors are
ConfigError: one line naming the file, table and key, or the variable.
"""
import argparse
import difflib
import json
import math
import re
import textwrap
import tomllib
from collections.abc import Mapping

#: TOML table of each subcommand.
SECTIONS = {"start": "sensor", "collector": "collector"}

ENV_PREFIX = "PIPELINE_"
CONFIG_DEST = "config"          # the flag naming the file: never a key in it

_SWITCHES = (argparse._StoreConstAction,)    # store_true / store_false / store_const
_ADD_CONST = argparse._AppendConstAction     # a switch adding its const to a list
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A bad configuration file or variable, in one line."""


# ---------------------------------------------------------------- the flags

def key_of(action) -> str:
    """The file key of a flag: its first long option without the dashes."""
    for opt in action.option_strings:
        if opt.startswith("--"):
            return opt[2:]
    return action.dest.replace("_", "-")


def env_name(action) -> str:
    return ENV_PREFIX + key_of(action).upper().replace("-", "_")


def settable(parser) -> dict:
    """key -> action for every flag of `parser` a file or variable may set."""
    keys = {}
    for action in parser._actions:
        if not action.option_strings or action.dest == argparse.SUPPRESS:
            continue
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        keys[key_of(action)] = action
    return keys


def leaf(parser, command: str):
    """The parser of a subcommand (`leaf(cli.parser(), "start")`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    raise KeyError(f"no subcommand {command!r}")


def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                yield from _all_parsers(sub)


def _chosen(parser, ns):
    """The (sub)parser argv selected, and the subcommand's name (None for the top)."""
    command = None
    while True:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                name = getattr(ns, action.dest, None) if action.dest != argparse.SUPPRESS else None
                if name in action.choices:
                    parser, command = action.choices[name], name
                    break
        else:
            return parser, command


# ---------------------------------------------------------------- converting values

def _is_list(action) -> bool:
    if isinstance(action, (_ADD_CONST, argparse.BooleanOptionalAction)):   # nargs 0: a switch, not a list
        return False
    return isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+") or \
        (isinstance(action.nargs, int) and action.nargs != 1 and not isinstance(action, _SWITCHES))


def _convert_one(action, text: str):
    """One string through the flag's type= and choices, as argparse would."""
    value = text
    if action.type is not None:
        try:
            value = action.type(text)
        except argparse.ArgumentTypeError as e:
            raise ConfigError(str(e)) from None
        except (TypeError, ValueError):
            name = getattr(action.type, "__name__", repr(action.type))
            raise ConfigError(f"invalid {name} value: {text!r}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(repr, action.choices))
        raise ConfigError(f"invalid choice: {value!r} (choose from {choices})")
    return value


def _scalar_text(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "true/false" if isinstance(value, bool) else type(value).__name__
        raise ConfigError(f"expected a string or a number, not {kind}")
    return value if isinstance(value, str) else repr(value)


def _from_file(action, value):
    """A TOML value -> what the parsed flag would hold (append_const: whether it is given)."""
    if isinstance(action, _ADD_CONST):
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, not {value!r}")
        return value
    if isinstance(action, _SWITCHES) or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, not {value!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else action.default
    if isinstance(action, argparse._CountAction):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"expected a count (0, 1, 2, ...), not {value!r}")
        return value
    if _is_list(action):
        if not isinstance(value, list):
            raise ConfigError(f"expected an array (the flag repeats), e.g. [{json.dumps(str(value))}]")
        return _items(action, [_scalar_text(v) for v in value])
    return _convert_one(action, _scalar_text(value))


def _from_env(action, text: str):
    if isinstance(action, (*_SWITCHES, _ADD_CONST, argparse.BooleanOptionalAction)):
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"expected 1/true/yes/on or 0/false/no/off, not {text!r}")
        on = word in _TRUE
        if isinstance(action, (_ADD_CONST, argparse.BooleanOptionalAction)):
            return on
        return action.const if on else action.default
    if isinstance(action, argparse._CountAction):
        if not text.strip().isdigit():
            raise ConfigError(f"expected a count (0, 1, 2, ...), not {text!r}")
        return int(text)
    if _is_list(action):
        parts = text.split("\n") if "\n" in text else text.split(",")
        return _items(action, [p.strip() for p in parts if p.strip()])
    return _convert_one(action, text)


def _items(action, texts):
    if isinstance(action, argparse._AppendAction) and action.nargs not in (None, "?"):
        raise ConfigError("repeatable flags taking several values each cannot be configured")
    if isinstance(action.nargs, int) and not isinstance(action, argparse._AppendAction) and len(texts) != action.nargs:
        raise ConfigError(f"expected {action.nargs} values, got {len(texts)}")
    if action.nargs == "+" and not texts:
        raise ConfigError("expected at least one value")
    return [_convert_one(action, t) for t in texts]


# ---------------------------------------------------------------- the layers

def from_environ(parser, environ: Mapping) -> dict:
    """dest -> value from PIPELINE_* variables naming flags of `parser`."""
    values = {}
    for action in settable(parser).values():
        text = environ.get(env_name(action))
        if text is None or text == "":
            continue
        try:
            _set(values, action, _from_env(action, text))
        except ConfigError as e:
            raise ConfigError(f"environment variable {env_name(action)}: {e}") from None
    return values


def _set(values, action, value):
    if isinstance(action, _ADD_CONST):     # several such switches may share one list
        if value:
            values[action.dest] = values.get(action.dest, list(action.default or [])) + [action.const]
    else:
        values[action.dest] = value


def parse_toml(text: str, path: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if m:
            return _raise(f"{path}: TOML syntax error at line {m[1]}, column {m[2]}: {message[:m.start()]}")
        m = re.search(r"\s*\(at end of document\)$", message)
        if m:
            return _raise(f"{path}: TOML syntax error at the end of the file: {message[:m.start()]}")
        return _raise(f"{path}: TOML syntax error: {message}")


def _raise(message):
    raise ConfigError(message)


def from_document(parser, document: dict, path: str, section: str, known_sections=None) -> dict:
    """dest -> value from table [section] of a parsed TOML document.

    known_sections: every table name the file may hold (a file may serve several
    commands); other tables are errors. None: tables other than `section` are ignored.
    """
    stray = [k for k, v in document.items() if not isinstance(v, dict)]
    if stray:
        raise ConfigError(f"{path}: keys outside any table: {', '.join(stray)} "
                          f"(put them under [{section}])")
    if known_sections is not None:
        unknown = [k for k in document if k not in known_sections]
        if unknown:
            raise ConfigError(f"{path}: unknown tables: {', '.join('[' + k + ']' for k in unknown)} "
                              f"(known: {', '.join('[' + k + ']' for k in sorted(known_sections))})")
    if section not in document:
        raise ConfigError(f"{path}: no [{section}] table")
    table = document[section]
    keys = settable(parser)
    spellings = {}
    for key in keys:
        spellings[key] = key
        spellings[key.replace("-", "_")] = key
    unknown, seen, values = [], {}, {}
    for name in table:
        key = spellings.get(name)
        if key is None or keys[key].dest == CONFIG_DEST:
            unknown.append(name)
        elif key in seen:
            raise ConfigError(f"{path}: [{section}] both {seen[key]} and {name}: keep one")
        else:
            seen[key] = name
    if unknown:
        described = []
        for name in unknown:
            if spellings.get(name) and keys[spellings[name]].dest == CONFIG_DEST:
                described.append(f"{name} (a file cannot name another)")
                continue
            near = difflib.get_close_matches(name, list(keys), n=1)
            described.append(f"{name} (did you mean {near[0]}?)" if near else name)
        raise ConfigError(f"{path}: unknown keys in [{section}]: {', '.join(described)}")
    for key, name in seen.items():
        action = keys[key]
        try:
            _set(values, action, _from_file(action, table[name]))
        except ConfigError as e:
            raise ConfigError(f"{path}: [{section}] {name}: {e}") from None
    return values


def read_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line})") from None


# ---------------------------------------------------------------- the whole

def _parse_given(parser, argv):
    """Only what argv says: every flag's default is SUPPRESSed for this parse."""
    saved = []
    try:
        for p in _all_parsers(parser):
            for action in p._actions:
                if action.option_strings and not isinstance(action, argparse._HelpAction):
                    saved.append((action, action.default, action.required))
                    action.default, action.required = argparse.SUPPRESS, False
        return parser.parse_args(argv)
    finally:
        for action, default, required in saved:
            action.default, action.required = default, required


def _parse_full(parser, argv):
    """argparse's own result (its defaults, string defaults through type=), required checked later."""
    saved = []
    try:
        for p in _all_parsers(parser):
            for action in p._actions:
                if action.required and action.option_strings:
                    saved.append(action)
                    action.required = False
        return parser.parse_args(argv)
    finally:
        for action in saved:
            action.required = True


def load(parser, argv, environ: Mapping, section) -> argparse.Namespace:
    """Parse argv with the file and environment layered under it.

    parser: a leaf parser, or one with subcommands (then the subcommand in argv
    picks the flags). section: the TOML table's name, or a mapping subcommand ->
    table (SECTIONS); a subcommand missing from the mapping gets flags only.
    Flag errors exit through parser.error as usual; file and variable errors raise
    ConfigError (one line).
    """
    argv = list(argv)
    ns = _parse_full(parser, argv)       # first: -h and flag errors show the real defaults
    given = vars(_parse_given(parser, argv))
    chosen, command = _chosen(parser, ns)
    if isinstance(section, Mapping):
        known = set(section.values())
        table = section.get(command)
    else:
        known, table = None, section
    layered = {}
    if table is not None:
        env = from_environ(chosen, environ)
        path = given.get(CONFIG_DEST) or environ.get(ENV_PREFIX + CONFIG_DEST.upper()) or None
        if path:
            document = parse_toml(read_file(path), path)
            layered.update(from_document(chosen, document, path, table, known))
        layered.update(env)
    for dest, value in layered.items():
        if dest not in given:
            setattr(ns, dest, value)
    missing = [max(a.option_strings, key=len) for a in chosen._actions
               if a.required and a.option_strings and a.dest not in given and a.dest not in layered]
    if missing:
        raise ConfigError(f"the following arguments are required: {', '.join(missing)} "
                          f"(on the command line, in the environment or in the file)")
    return ns


# ---------------------------------------------------------------- the default file

def _toml_value(value):
    """TOML text of a default, or None when TOML cannot say it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)   # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        items = [_toml_value(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"
    return None


def _help_text(parser, action) -> str:
    text = action.help or ""
    try:
        return text % {**vars(action), "prog": parser.prog}
    except (KeyError, TypeError, ValueError):
        return text


def _entry(parser, key, action) -> list:
    lines = [f"# {line}" for line in textwrap.wrap(_help_text(parser, action), 76, break_on_hyphens=False)]
    extra = [f"environment: {env_name(action)}"]
    if action.choices is not None:
        extra.append("one of " + ", ".join(map(str, action.choices)))
    if _is_list(action):
        extra.append("an array")
    lines.append("# (" + "; ".join(extra) + ")")
    if isinstance(action, (*_SWITCHES, _ADD_CONST)):
        return lines + [f"{key} = false"]
    if isinstance(action, argparse.BooleanOptionalAction):
        if isinstance(action.default, bool):
            return lines + [f"{key} = {_toml_value(action.default)}"]
        return lines + [f"# {key} = true"]
    default = action.default
    text = _toml_value(default) if default is not None else None
    if text is not None:
        return lines + [f"{key} = {text}"]
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    example = json.dumps(metavar)
    if _is_list(action):
        example = f"[{example}]"
    note = "" if default is None else "   # default not expressible in TOML"
    return lines + [f"# {key} = {example}{note}"]


def defaults_for(parser, sections: Mapping = SECTIONS) -> str:
    """defaults_toml of every subcommand of `parser` that has a table in `sections`."""
    found = {}
    for command, section in sections.items():
        try:
            found[section] = leaf(parser, command)
        except KeyError:
            continue
    return defaults_toml(found)


def defaults_toml(parser_by_section: dict, title: str = "pipeline") -> str:
    """A commented configuration file of every flag at its default.

    parser_by_section: table name -> leaf parser, e.g.
    {"sensor": leaf(cli.parser(), "start")}. `load` accepts the result unchanged
    and gives the same values as no file at all. Keys whose default is None are
    commented out, with the flag's metavar as a placeholder.
    """
    out = [f"# {title} configuration: every flag of each command, at its default.",
           "# Precedence: command-line flags > PIPELINE_* environment > this file > defaults.",
           "# Keys are the long flags without dashes; switches take true/false;",
           "# repeatable flags take arrays."]
    for section, parser in parser_by_section.items():
        out += ["", f"[{section}]"]
        for key, action in settable(parser).items():
            if action.dest == CONFIG_DEST or action.help == argparse.SUPPRESS:
                continue
            out += [""] + _entry(parser, key, action)
    return "\n".join(out) + "\n"
