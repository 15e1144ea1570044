"""Every subcommand's --help explains every option, lists its choices, and shows no reST markup."""

from __future__ import annotations

import argparse

from edge.cli import build_parser


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help():
    missing = [f"{name} {a.option_strings or a.dest}" for name, sp in _subparsers().items() for a in sp._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, missing


def test_help_texts_have_no_rest_markup_and_list_choices():
    for name, sp in _subparsers().items():
        text = sp.format_help()
        assert "``" not in text and "::" not in text, (name, text[:400])
        for a in sp._actions:
            if a.choices and not isinstance(a, argparse._SubParsersAction):
                assert "{" + ",".join(map(str, a.choices)) + "}" in text or all(str(c) in text for c in a.choices), \
                    (name, a.dest)


def test_one_name_per_concept_and_old_names_warn(capsys):
    """--port is the HTTP port, --link the robot's serial port, the bundle positional; old names warn."""
    from edge.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bridge", "--link", "/dev/x"]).port == "/dev/x"
    assert parser.parse_args(["serve", "b", "--link", "sim", "--port", "8090"]).link == "sim"
    assert parser.parse_args(["demo", "mybundle"]).bundle == "mybundle"
    capsys.readouterr()
    assert parser.parse_args(["bridge", "--port", "/dev/y"]).port == "/dev/y"
    assert parser.parse_args(["doctor", "--robot", "sim"]).link == "sim"
    assert parser.parse_args(["demo", "--bundle", "b2"]).bundle_option == "b2"
    err = capsys.readouterr().err
    assert "--port is now --link" in err and "--robot is now --link" in err and "--bundle is now the positional" in err
    for name, sp in _subparsers().items():
        text = sp.format_help()
        assert "--robot" not in text and not (name == "bridge" and "--port" in text), name
