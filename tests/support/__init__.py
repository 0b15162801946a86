"""Code the tests and the benchmarks share, none of it a test: the local Telegram Bot API server
(`botapi_server`), the simulated chain with known churn (`churn_sim`), the dispatcher process
of the crash test and the dispatch benchmark (`dispatch_worker`), and the builders of members,
cars, stores, visits and chats that tests set up (`builders`)."""
