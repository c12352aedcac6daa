"""Exit codes of the ``stampd`` program (DESIGN §8): a contract for scripts."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: Not proven, verification failed, or an input could not be processed.
    FAILURE = 1
    #: Bad usage or bad configuration; the message names the option or key.
    USAGE = 2
    #: The daemon's control socket could not be reached.
    DAEMON_UNREACHABLE = 3
    #: A bug in stampd (sysexits EX_SOFTWARE); rerun with --debug for the traceback.
    INTERNAL = 70
