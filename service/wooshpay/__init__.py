"""WooshPay's protocol: event parsing and webhook signatures (see docs/wooshpay.md)."""
