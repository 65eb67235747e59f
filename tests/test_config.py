"""pipeline/config.py: flags > PIPELINE_* environment > TOML file > defaults, against the real CLI parser."""
import argparse

import pytest

from pipeline import cli, config
from pipeline.config import SECTIONS, ConfigError, load


def real_parser():
    """cli.parser(), with --config on each configurable subcommand (added here until cli.py has it)."""
    ap = cli.parser()
    for command in SECTIONS:
        try:
            sub = config.leaf(ap, command)
        except KeyError:
            continue
        if "config" not in {a.dest for a in sub._actions}:
            sub.add_argument("--config", metavar="FILE", help="TOML file (default: $PIPELINE_CONFIG)")
    return ap


def write(tmp_path, text, name="pipeline.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def one_line_error(ap, argv, environ, match=None):
    with pytest.raises(ConfigError) as e:
        load(ap, argv, environ, SECTIONS)
    message = str(e.value)
    assert "\n" not in message
    if match is not None:
        assert match in message, message
    return message


# ---------------------------------------------------------------- precedence

def test_each_layer_wins_over_the_ones_below(tmp_path):
    ap = real_parser()
    f = write(tmp_path, "[sensor]\nworkers = 3\n")
    assert load(ap, ["start"], {}, SECTIONS).workers == 2                                   # parser default
    assert load(ap, ["start", "--config", f], {}, SECTIONS).workers == 3                    # file
    assert load(ap, ["start", "--config", f], {"PIPELINE_WORKERS": "4"}, SECTIONS).workers == 4
    assert load(ap, ["start", "--config", f, "--workers", "5"], {"PIPELINE_WORKERS": "4"}, SECTIONS).workers == 5
    assert load(ap, ["start", "--workers", "5"], {"PIPELINE_WORKERS": "4"}, SECTIONS).workers == 5


def test_four_layers_in_one_load(tmp_path):
    ap = real_parser()
    f = write(tmp_path, "[sensor]\nidle-timeout = 30\nactive-timeout = 600\nclose-linger = 9\n")
    ns = load(ap, ["start", "--close-linger", "1"], {"PIPELINE_ACTIVE_TIMEOUT": "120", "PIPELINE_CONFIG": f}, SECTIONS)
    assert ns.command == "start"
    assert ns.close_linger == 1.0          # flag over file
    assert ns.active_timeout == 120.0      # environment over file
    assert ns.idle_timeout == 30.0         # file over default (None)
    assert ns.hash_seed == 0               # default
    assert ns.config == f                  # the file came from PIPELINE_CONFIG


def test_config_flag_wins_over_PIPELINE_CONFIG(tmp_path):
    ap = real_parser()
    a = write(tmp_path, "[sensor]\nworkers = 3\n", "a.toml")
    b = write(tmp_path, "[sensor]\nworkers = 7\n", "b.toml")
    assert load(ap, ["start", "--config", b], {"PIPELINE_CONFIG": a}, SECTIONS).workers == 7


def test_values_go_through_the_flags_own_type(tmp_path):
    ap = real_parser()
    f = write(tmp_path, '[sensor]\nworkers = "auto"\nidle-timeout = 15\nmax-sessions = "100"\nhash-seed = -3\n')
    ns = load(ap, ["start", "--config", f], {}, SECTIONS)
    assert ns.workers == "auto"          # resolved by the command once --cpus is known
    assert ns.idle_timeout == 15.0 and isinstance(ns.idle_timeout, float)
    assert ns.max_sessions == 100
    assert ns.hash_seed == -3


def test_a_higher_layer_replaces_a_list_wholesale(tmp_path):
    ap = real_parser()
    f = write(tmp_path, '[sensor]\noutput = ["jsonl:a.jsonl", "jsonl:b.jsonl"]\nread = ["x.pcap"]\n')
    ns = load(ap, ["start", "--config", f], {}, SECTIONS)
    assert ns.output == ["jsonl:a.jsonl", "jsonl:b.jsonl"] and ns.read == ["x.pcap"]
    ns = load(ap, ["start", "--config", f, "--output", "jsonl:c.jsonl"], {"PIPELINE_READ": "y.pcap"}, SECTIONS)
    assert ns.output == ["jsonl:c.jsonl"]            # not a, b, c
    assert ns.read == ["y.pcap"]


def test_environment_lists_split_on_commas_or_on_newlines():
    ap = real_parser()
    ns = load(ap, ["start"], {"PIPELINE_OUTPUT": "jsonl:a.jsonl, jsonl:b.jsonl,"}, SECTIONS)
    assert ns.output == ["jsonl:a.jsonl", "jsonl:b.jsonl"]
    ns = load(ap, ["start"], {"PIPELINE_READ": "one,1.pcap\n two.pcap\n\n"}, SECTIONS)
    assert ns.read == ["one,1.pcap", "two.pcap"]     # a newline in the value: commas are literal


def test_switches_from_file_and_environment(tmp_path):
    ap = real_parser()
    f = write(tmp_path, "[sensor]\nquiet = true\nno-close-expiry = false\n")
    assert load(ap, ["start", "--config", f], {}, SECTIONS).quiet is True
    assert load(ap, ["start", "--config", f], {"PIPELINE_QUIET": "off"}, SECTIONS).quiet is False
    assert load(ap, ["start", "--config", f, "--quiet"], {"PIPELINE_QUIET": "0"}, SECTIONS).quiet is True
    assert load(ap, ["start"], {"PIPELINE_NO_CLOSE_EXPIRY": "yes"}, SECTIONS).no_close_expiry is True


def test_empty_and_foreign_variables_are_ignored():
    ap = real_parser()
    ns = load(ap, ["start"], {"PIPELINE_WORKERS": "", "PIPELINE_NO_SUCH_FLAG": "x", "WORKERS": "9"}, SECTIONS)
    assert ns.workers == 2


def test_underscore_spelling_is_accepted(tmp_path):
    ap = real_parser()
    f = write(tmp_path, "[sensor]\nidle_timeout = 12\nstats_json = 'run.json'\n")
    ns = load(ap, ["start", "--config", f], {}, SECTIONS)
    assert (ns.idle_timeout, ns.stats_json) == (12.0, "run.json")


def test_collector_table(tmp_path):
    ap = real_parser()
    try:
        config.leaf(ap, "collector")
    except KeyError:
        pytest.skip("cli.py has no `pipeline collector` yet")
    f = write(tmp_path, '[sensor]\nworkers = 3\n[collector]\nlisten = "tcp://0.0.0.0:6000"\n')
    ns = load(ap, ["collector", "--config", f], {"PIPELINE_WORKERS": "zero"}, SECTIONS)  # start's variable: not ours
    assert ns.command == "collector" and ns.listen == "tcp://0.0.0.0:6000"
    assert load(ap, ["start", "--config", f], {}, SECTIONS).workers == 3


def test_commands_without_a_table_take_flags_only(tmp_path):
    ap = real_parser()
    ap_ = config.leaf(ap, "start")
    assert load(ap_, ["--workers", "3"], {"PIPELINE_WORKERS": "4"}, "sensor").workers == 3   # a leaf parser, a str section
    ns = load(ap, ["start"], {"PIPELINE_WORKERS": "4"}, {"collector": "collector"})
    assert ns.workers == 2


def test_the_parser_is_left_as_it_was(tmp_path):
    ap = real_parser()
    before = vars(ap.parse_args(["start"]))
    f = write(tmp_path, "[sensor]\nworkers = 3\n")
    load(ap, ["start", "--config", f], {"PIPELINE_QUIET": "1"}, SECTIONS)
    assert vars(ap.parse_args(["start"])) == before


def test_bad_flags_still_exit_through_the_parser():
    ap = real_parser()
    with pytest.raises(SystemExit) as e:
        load(ap, ["start", "--workers", "0"], {}, SECTIONS)
    assert e.value.code == 2


# ---------------------------------------------------------------- errors, one line each

def test_unknown_keys_are_named(tmp_path):
    ap = real_parser()
    f = write(tmp_path, "[sensor]\nwrokers = 3\nfoo = 1\nquiet = true\n")
    message = one_line_error(ap, ["start", "--config", f], {})
    assert message == f"{f}: unknown keys in [sensor]: wrokers (did you mean workers?), foo"


@pytest.mark.parametrize("line, words", [
    ('workers = "many"', ["[sensor] workers", "not a whole number: 'many'"]),
    ("workers = 0", ["[sensor] workers", "must be at least 1"]),
    ("workers = true", ["[sensor] workers", "not true/false"]),
    ("workers = [2]", ["[sensor] workers", "not list"]),
    ("idle-timeout = -1", ["[sensor] idle-timeout", "must be zero or more seconds"]),
    ("active-timeout = 0.5", ["[sensor] active-timeout", "at least 1 second"]),
    ('output = "jsonl:a.jsonl"', ["[sensor] output", "expected an array"]),
    ("output = [1, {}]", ["[sensor] output", "not dict"]),
    ('quiet = "yes"', ["[sensor] quiet", "expected true or false"]),
    ("sensor-id = { a = 1 }", ["[sensor] sensor-id", "not dict"]),
])
def test_wrong_types_name_the_key(tmp_path, line, words):
    ap = real_parser()
    f = write(tmp_path, f"[sensor]\n{line}\n")
    message = one_line_error(ap, ["start", "--config", f], {})
    assert message.startswith(f"{f}: ")
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("name, value, words", [
    ("PIPELINE_WORKERS", "zero", "not a whole number: 'zero'"),
    ("PIPELINE_QUIET", "maybe", "expected 1/true/yes/on or 0/false/no/off"),
    ("PIPELINE_IDLE_TIMEOUT", "-5", "must be zero or more seconds"),
])
def test_bad_variables_name_the_variable(name, value, words):
    message = one_line_error(real_parser(), ["start"], {name: value})
    assert message.startswith(f"environment variable {name}: ") and words in message


def test_a_bad_variable_is_an_error_even_when_a_flag_overrides_it():
    # The flag wins anyway, but a broken variable is still a broken deployment: say so.
    one_line_error(real_parser(), ["start", "--workers", "3"], {"PIPELINE_WORKERS": "zero"}, "PIPELINE_WORKERS")


def test_unreadable_file(tmp_path):
    missing = str(tmp_path / "nope.toml")
    message = one_line_error(real_parser(), ["start", "--config", missing], {})
    assert message.startswith(missing) and "No such file" in message
    one_line_error(real_parser(), ["start", "--config", str(tmp_path)], {}, str(tmp_path))   # a directory


def test_toml_syntax_error_names_file_and_line(tmp_path):
    f = write(tmp_path, "[sensor]\nworkers = 3\nquiet = tru\n")
    message = one_line_error(real_parser(), ["start", "--config", f], {})
    assert message.startswith(f"{f}: TOML syntax error at line 3")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[sensor]\n# caf\xe9\n")
    one_line_error(real_parser(), ["start", "--config", str(path)], {}, "not UTF-8 text (line 2)")


@pytest.mark.parametrize("text, words", [
    ("workers = 3\n", "keys outside any table: workers (put them under [sensor])"),
    ("[senosr]\nworkers = 3\n", "unknown tables: [senosr]"),
    ("[collector]\n", "no [sensor] table"),
    ("[sensor]\nconfig = 'other.toml'\n", "config (a file cannot name another)"),
    ("[sensor]\nidle-timeout = 1\nidle_timeout = 2\n", "both idle-timeout and idle_timeout"),
])
def test_file_shape_errors(tmp_path, text, words):
    f = write(tmp_path, text)
    one_line_error(real_parser(), ["start", "--config", f], {}, words)


# ---------------------------------------------------------------- a parser of every kind of flag

def every_kind():
    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--config")
    p.add_argument("--level", choices=["low", "high"], default="low")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-promisc", dest="promisc", action="store_false")
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--pair", nargs=2, type=float)
    p.add_argument("--tag", action="append", type=str.upper)
    return p


def test_every_kind_of_flag(tmp_path):
    f = write(tmp_path, '[demo]\nlevel = "high"\nport = 80\nno-promisc = true\ncolor = false\n'
                        'verbose = 2\npair = [1, 2.5]\ntag = ["a", "b"]\n')
    ns = load(every_kind(), ["--config", f], {}, "demo")
    assert vars(ns) == {"config": f, "level": "high", "port": 80, "promisc": False, "color": False,
                        "verbose": 2, "pair": [1.0, 2.5], "tag": ["A", "B"]}
    ns = load(every_kind(), ["--port", "1"], {"PIPELINE_NO_PROMISC": "false", "PIPELINE_TAG": "x"}, "demo")
    assert ns.promisc is True and ns.tag == ["X"]


def test_choices_and_required(tmp_path):
    f = write(tmp_path, '[demo]\nlevel = "medium"\nport = 1\n')
    with pytest.raises(ConfigError, match=r"\[demo\] level: invalid choice: 'medium'"):
        load(every_kind(), ["--config", f], {}, "demo")
    with pytest.raises(ConfigError, match="required: --port"):
        load(every_kind(), [], {}, "demo")
    assert load(every_kind(), [], {"PIPELINE_PORT": "8"}, "demo").port == 8
    with pytest.raises(ConfigError, match=r"PIPELINE_PAIR: expected 2 values, got 1"):
        load(every_kind(), [], {"PIPELINE_PAIR": "1", "PIPELINE_PORT": "8"}, "demo")


def test_a_new_flag_gets_a_key_and_a_variable_for_free(tmp_path):
    p = every_kind()
    p.add_argument("--brand-new-flag", type=int, default=1)
    f = write(tmp_path, "[demo]\nport = 1\nbrand-new-flag = 5\n")
    assert load(p, ["--config", f], {}, "demo").brand_new_flag == 5
    assert load(p, ["--config", f], {"PIPELINE_BRAND_NEW_FLAG": "6"}, "demo").brand_new_flag == 6


# ---------------------------------------------------------------- the default file

def test_defaults_file_round_trip(tmp_path):
    ap = real_parser()
    text = config.defaults_for(ap)
    f = write(tmp_path, text)
    for command, section in SECTIONS.items():
        try:
            sub = config.leaf(ap, command)
        except KeyError:
            continue
        assert f"\n[{section}]\n" in text
        plain = vars(load(ap, [command], {}, SECTIONS))
        from_file = vars(load(ap, [command, "--config", f], {}, SECTIONS))
        assert from_file == {**plain, "config": f}
        for key, action in config.settable(sub).items():     # every flag has a key, with its help
            if action.dest == "config":
                continue
            assert f"\n{key} = " in text or f"\n# {key} = " in text, key
            assert config.env_name(action) in text


def test_defaults_file_contents():
    text = config.defaults_toml({"sensor": config.leaf(real_parser(), "start")})
    assert "\nworkers = 2\n" in text
    assert "\nread = []\n" in text
    assert "\nquiet = false\n" in text
    assert '\n# stats-json = "PATH"\n' in text        # default None: commented out
    assert '\n# output = ["KIND:TARGET"]\n' in text
    assert "# seed of the session-key hash (default 0)\n" in text
    assert "\nvlan-key = true\n" in text and "(environment: PIPELINE_VLAN_KEY)\n" in text   # --[no-]x: no array
    assert "\n[collector]" not in text


def test_switches_sharing_one_list(tmp_path):
    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--config")
    p.add_argument("--tcp", dest="protocols", action="append_const", const=6)
    p.add_argument("--udp", dest="protocols", action="append_const", const=17)
    f = write(tmp_path, "[demo]\ntcp = true\nudp = true\n")
    assert load(p, ["--config", f], {}, "demo").protocols == [6, 17]
    assert load(p, ["--config", f], {"PIPELINE_UDP": "1"}, "demo").protocols == [17]     # the variable's layer wins
    assert load(p, ["--config", f, "--tcp"], {}, "demo").protocols == [6]


def test_help_shows_the_real_defaults(capsys):
    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--level", default="low", help="how much (default %(default)s)")
    with pytest.raises(SystemExit):
        load(p, ["-h"], {}, "demo")
    assert "how much (default low)" in capsys.readouterr().out


def test_pipeline_config_without_a_config_flag(tmp_path):
    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--level", default="low")
    f = write(tmp_path, "[demo]\nlevel = 'high'\n")
    assert load(p, [], {"PIPELINE_CONFIG": f}, "demo").level == "high"
