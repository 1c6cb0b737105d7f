"""The one exception type that means "the user must fix something"."""


class UserError(Exception):
    """Bad input (config, data file, run folder): the message says what and how to fix it.

    Scripts catch it at the top level and print the message alone, without a traceback.
    """
