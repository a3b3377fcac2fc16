"""The one exception type that callers show to users as a single line."""


class CharLMError(Exception):
    """A problem the user can fix (bad file, bad flag, missing model).

    Its message is one short line; the CLI and the bot print it without a traceback.
    """


class TrainingCancelled(CharLMError):
    """Raised by training when the caller's cancel signal was set; nothing was saved."""
