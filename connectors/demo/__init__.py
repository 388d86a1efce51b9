"""`make demo` and `kcdp demo`: the end-to-end story on the embedded default (capture,
workload, restores, mount), told with the product's public parts."""
