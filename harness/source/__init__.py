"""Recipe -> lock -> sources in the mirror cache -> the patched tree: git, mirrors, locks, the stack."""
