"""Development tools: a local Redis launcher, the `dev` environment file and the `send` event
builder. Not part of a production install: the wheel and the container image leave this package
out, and the command line offers `dev` and `send` only where it is present (a checkout)."""
