"""The error every option check raises (option files, command-line options, metric options)."""


class OptionError(ValueError):
    """The option file has problems; the message lists each with its dotted key."""
