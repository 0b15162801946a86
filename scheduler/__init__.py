"""The lifecycle engine: rules select members set-based, the outbox stores every intent before
it is sent, and the dispatcher sends through the same channels the chat uses."""
