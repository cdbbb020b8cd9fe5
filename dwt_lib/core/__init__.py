"""Layer 0, core: every exception type, the one repository root and the folders below it, atomic writes and
checksums, stable hashing. Imports nothing else from dwt_lib."""
