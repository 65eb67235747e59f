"""The command line takes whole flag names only (issue 25): `--worker 3` is not `--workers 3`,
as the config file and PIPELINE_* variables, which know whole names only, would refuse it."""
import argparse
import os
import subprocess


from pipeline import cli
from tests import runner


def every_parser(ap):
    yield None, ap
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub


def test_no_parser_takes_an_abbreviation():
    cut = 0
    for command, p in every_parser(cli.parser()):
        flags = {s for a in p._actions for s in a.option_strings if s.startswith("--")}
        positionals = ["x/y" for a in p._actions if not a.option_strings and a.required
                       and not isinstance(a, argparse._SubParsersAction)]
        for flag in sorted(flags):
            short = flag[:-1]
            if len(short) < 3 or any(f != flag and f.startswith(short) for f in flags):
                continue            # ambiguous or too short: argparse refused those anyway
            argv = ([command] if command else []) + [short] + positionals
            _, rest = cli.parser().parse_known_args(argv)
            assert rest == [short], argv
            cut += 1
    assert cut > 40           # every command's flags were tried


def test_worker_is_not_workers(tmp_path):
    p = subprocess.run([*runner.pipeline_cmd(), "start", "--worker", "3", "--read", str(tmp_path / "none.pcap")],
                       capture_output=True, text=True, timeout=60, cwd=runner.ROOT,
                       env=dict(os.environ, PYTHONPATH=str(runner.ROOT)))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--worker 3" in lines[0], p.stderr
