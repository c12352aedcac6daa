"""stampd.daemon — what *runs*: configuration, watcher, job runner, providers, CLI."""

# The one place the version is written; pyproject.toml reads it from here. A constant rather
# than importlib.metadata, which costs every CLI invocation ~30 ms of imports.
__version__ = "0.1.0"
