"""Argument helpers shared by the subcommands: one name per concept, old names kept one release with a warning.

The names: ``--port`` is always the HTTP port, ``--link`` always the robot's serial port (or ``sim``), and
the bundle is always positional.
"""

from __future__ import annotations

import argparse
import sys


class DeprecatedAlias(argparse.Action):
    """An old option name that still works for one release, and says what to use instead."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} is now {self.new}; the old name goes in the next release",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    """Accept ``old`` as a hidden, warning alias of the option ``new`` (stored in ``dest``)."""
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def whole_number(minimum: int):
    """An argparse ``type``: an int of at least ``minimum``, or a usage error that says which."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse
