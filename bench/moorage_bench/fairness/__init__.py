"""bench/fairness: one project hammers the gateway while another's latency is measured."""
