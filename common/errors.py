"""The exceptions a training script turns into exit codes (common/cli.py)."""


class UserError(Exception):
    """Bad input (config, data file, run folder): the message says what and how to fix it.

    Scripts catch it at the top level and print the message alone, without a traceback.
    """


class TrainingDiverged(Exception):
    """A loss became NaN or infinite; the message names the loss, epoch and step."""
