"""memberbot: member engagement for car service chains."""

__version__ = "0.1.0"
