"""Chaos soak: realistic WooshPay traffic through real processes while faults are injected.

`scenario` generates order life cycles, `oracle` works out what each order must end as, `system`
runs the processes under test, `delivery` plays WooshPay, `faults` breaks things on a schedule,
`harness` ties a run together and `soak` is the command line (`python -m tests.chaos.soak`).
"""
