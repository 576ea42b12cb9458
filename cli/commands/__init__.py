"""One module per command group; each handler takes the parsed arguments and returns an exit status.

Handlers that talk to the API are coroutines (`cli.main` runs them); `up`, `down` and `demo`
start processes and are plain functions that run their own event loops around them.
"""
