"""The benchmark harness of issue 3: bursts, latency, a large vault and overload, measured on
this machine against the raw limit of its disk. Run `python -m bench` (or `make bench`);
`python -m bench --smoke` is the short correctness run the test suite uses. See
docs/performance.md for the figures and how to read them."""
