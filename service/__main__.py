"""`python -m service` runs the `wooshpay-webhooks` command line."""

from service.cli import main

main()
