"""``aiev chat``: AutoCoder's code interpreter for a trained student in a terminal (docs/chat.md)."""
