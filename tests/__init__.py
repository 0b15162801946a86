"""The test suite. A package, so that tests and benchmarks import its support code one way:
`from tests.support.botapi_server import BotApiServer`, with the repository root on `sys.path`
(pytest puts it there for a package's tests; `python -m bench.…` runs from it)."""
