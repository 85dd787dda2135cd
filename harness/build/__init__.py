"""Patched tree -> builds/<recipe>/<backend>/: configure, compile, stamp, prove, publish, pack, cache."""
