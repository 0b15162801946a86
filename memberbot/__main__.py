"""`python -m memberbot …`: the same CLI, for shells where the script is not on PATH."""

from memberbot.cli import app

app(prog_name="memberbot")
