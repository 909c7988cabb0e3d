"""bench/streams: 1 GB through logs -f, attach, cp and save, and the gateway's RSS."""
