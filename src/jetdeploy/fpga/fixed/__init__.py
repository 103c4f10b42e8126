"""Fixed-point scale algebra that the hls4ml and da4ml back ends share (numpy only)."""
