"""Text from users and file names, made safe to print: no raw control characters reach a terminal.

A file name can hold escape sequences (``\\x1b[2J`` clears the screen), carriage returns that
hide what was printed before them, or bytes that are not UTF-8. Every message that carries a
file name or user text goes through ``printable``.
"""


def _escape(ch):
    code = ord(ch)
    if 0xdc80 <= code <= 0xdcff:  # a byte that is not UTF-8, kept by Python as a surrogate escape
        return f'\\x{code - 0xdc00:02x}'
    return f'\\x{code:02x}' if code < 0x100 else f'\\u{code:04x}'


def is_control(ch):
    """C0 and C1 control characters, DEL, and the surrogate escapes of undecodable bytes."""
    code = ord(ch)
    return code < 0x20 or code == 0x7f or 0x80 <= code < 0xa0 or 0xd800 <= code <= 0xdfff


def printable(text, keep_newlines=True):
    """``text`` with control characters shown as ``\\xNN`` (line breaks kept when ``keep_newlines``)."""
    text = str(text)
    return ''.join(_escape(ch) if is_control(ch) and not (keep_newlines and ch in '\n\t') else ch for ch in text)
