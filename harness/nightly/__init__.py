"""Nightly: re-lock, rebuild, gate, adopt what passes, report."""
