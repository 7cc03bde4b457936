# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""golden-ami: publish, find and clean up the golden ECS AMIs, write user data for hosts
that are not on them, and audit a fleet.

Exit codes: 0 done; 1 the operation failed or found problems (publish with an AMI that is
not available, audit --fail-on-findings with findings); 2 bad input; 3 an AWS error
(credentials, permissions, throttling); 4 nothing found (find with nothing published); 5 an
audit that is incomplete (a read denied, or failing after retries: what was read is reported).
Logs go to stderr; --json puts machine-readable output on stdout. Every error is one line
on stderr, `golden-ami: ...`, never a traceback (-vv adds it for an unexpected error). When
the reader of stdout goes away (`golden-ami ... | head`), it stops quietly with 141, as a
Unix tool killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

import botocore.exceptions

from golden_ami import audit, cleanup, find, publish, rollback, userdata
from golden_ami.aws import LOG, Aws, GoldenAmiError, translate

COMMANDS = {
    "publish": publish,
    "rollback": rollback,
    "find": find,
    "cleanup": cleanup,
    "user-data": userdata,
    "audit": audit,
}


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"golden-ami: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION or the profile's)")
    common.add_argument("--profile", help="AWS profile")
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logs; shows the API call count"
    )
    parser = Parser(prog="golden-ami", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=module.__doc__.splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def log_to_stderr(verbose: int) -> None:
    """Our own logger only: a library (or a test runner) keeps its logging as it was."""
    for handler in list(LOG.handlers):
        LOG.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("golden-ami: %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


def one_line(message: str) -> str:
    """A message on one line: AWS's and subprocesses' own messages may hold newlines."""
    return re.sub(r"\s*\n\s*", " ", message).strip()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr(args.verbose)
    aws = Aws(region=args.region, profile=args.profile)  # the session is made on first use
    try:
        try:
            result = args.run(args, aws)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise translate(exc) from exc
    except GoldenAmiError as exc:
        LOG.error("%s", one_line(str(exc)))
        return exc.exit_code
    except KeyboardInterrupt:
        LOG.error("interrupted")
        return 130
    except Exception as exc:  # a bug: still one line; the traceback with -vv
        LOG.debug("unexpected error", exc_info=True)
        LOG.error("unexpected %s: %s (-vv shows the traceback)", type(exc).__name__, one_line(str(exc)))
        return 1
    finally:
        if args.verbose:
            detail = ", ".join(f"{name} {count}" for name, count in sorted(aws.calls.items()))
            LOG.info("%d API calls%s", aws.total_calls(), f" ({detail})" if detail else "")
    try:
        if args.json:
            print(json.dumps(result.data, indent=2, sort_keys=True, default=str))
        elif result.raw:
            sys.stdout.buffer.write(result.raw)
        elif result.text:
            print(result.text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's last flush fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    return result.code


if __name__ == "__main__":
    sys.exit(main())
