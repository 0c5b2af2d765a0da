"""`python -m service` runs the `wooshpay-webhooks` command line."""

from service.cli.main import main

main()
