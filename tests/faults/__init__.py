"""Fault injection against the sandbox: the fault x target matrix and the crash-safety test."""
