"""The exceptions a training script turns into exit codes (common/cli.py)."""


class UserError(Exception):
    """Bad input (config, data file, run folder): the message says what and how to fix it.

    Scripts catch it at the top level and print the message alone, without a traceback.
    """


class TrainingDiverged(Exception):
    """A loss became NaN or infinite; the message names the loss, epoch and step."""


class Preempted(Exception):
    """SIGTERM or SIGUSR1 arrived: the run wrote a checkpoint at a step boundary and stops;
    the message says where and how to continue."""
