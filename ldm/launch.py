"""Running a stage script: parse its flags, join the process group under torchrun, call its
main, and turn every error into one line on stderr naming the flag (cli.StageParser.flag_for),
the file or the rank."""

from __future__ import annotations

import argparse
import os
import sys
import time
import unicodedata
import warnings
from typing import Callable

from . import distributed
from .cli import StageParser, UsageError
from .errors import ConfigError, LdmError
from .runtime import precision_policy


def run(parser: StageParser, main: Callable[[argparse.Namespace], None], multiprocess: bool = True) -> None:
    """Parse the arguments and call main(args). A ConfigError becomes `error: --flag value: reason`,
    any other LdmError `error: ...`, on stderr with exit status 2.

    Under torchrun (`multiprocess` stages only) the process joins the group first (distributed.py);
    ranks other than 0 print nothing and show no progress. Any error then becomes one line naming
    the rank, printed at once by rank 0 for an LdmError (which every rank meets alike: a bad
    option or file, a diverged loss) and otherwise after `RANK_ERROR_GRACE` seconds. torchrun
    stops every rank as soon as one exits with an error, so the line that appears is the first
    failure's: an error every rank meets is reported once, and a collective that fails because
    another rank died is not reported at all (torchrun's own summary names the dead rank).
    """
    problem = distributed.environment_problem()
    if problem:
        fail(problem, 2, shared=True)
    if distributed.launched():
        distributed.enter()  # so that even a bad option is reported with its rank, once
    warnings.showwarning = _show_warning
    try:
        args = parser.parse_args()
        if distributed.launched():
            if not multiprocess:
                raise LdmError("this stage runs as one process; start it without torchrun")
            distributed.init(args.device)
            if not distributed.is_main():
                args.no_progress = True
                sys.stdout = open(os.devnull, "w")
                warnings.simplefilter("ignore")
        # a script's --precision (cli.add_precision_arg) holds while it runs, and no longer
        with precision_policy(getattr(args, "precision", "auto")):
            main(args)
        distributed.shutdown(finished=True)
    except ConfigError as e:
        fail(f"{parser.flag_for(e.field)} {e.value}: {e.reason}", 2, shared=True)
    except UsageError as e:
        fail(f"{e} (see --help)", 2, shared=True)
    except LdmError as e:
        fail(str(e), 2, shared=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # on several processes: a failed collective or a bug, as one line per job
        if distributed.world().size == 1:
            raise
        fail(f"{type(e).__name__}: {e}", 1, shared=False)
    finally:
        distributed.shutdown()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, like an error but without stopping: `warning: ...`."""
    print(f"warning: {one_line(str(message))}", file=sys.stderr)


RANK_ERROR_GRACE = 3.0  # seconds; torchrun's monitor notices a failed rank within about one


def fail(message: str, status: int, shared: bool) -> None:
    world = distributed.world()
    if world.size > 1:
        message = f"rank {world.rank} of {world.size}: {message}"
        if world.rank > 0 or not shared:
            time.sleep(RANK_ERROR_GRACE)
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(status)


def one_line(message: str) -> str:
    """`message` with control characters (a newline in a path, say) written as escapes, so that
    an error stays one line."""
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in message)
