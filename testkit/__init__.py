"""What the tests and the benchmarks share: speech, media, configs, a daemon to drive, and a
scripted pipeline. It lives outside `tests/` so `bench/` never imports test modules."""
